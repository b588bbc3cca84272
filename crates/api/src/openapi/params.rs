//! The query and path parameters and content types operations list.

/// A query or path parameter.
pub(super) struct Param {
    pub(super) name: &'static str,
    pub(super) location: &'static str,
    pub(super) ty: &'static str,
    pub(super) description: &'static str,
}

pub(super) const fn query(
    name: &'static str,
    ty: &'static str,
    description: &'static str,
) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
    }
}

pub(super) const NAME: Param = Param {
    name: "name",
    location: "path",
    ty: "string",
    description: "name of the object",
};
pub(super) const NAMESPACE: Param = Param {
    name: "namespace",
    location: "path",
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
pub(super) const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
pub(super) const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. The only valid value is 'All': all dry run stages are processed.",
);
pub(super) const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "A name associated with the actor or entity that is making these changes.",
);
pub(super) const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "How the server handles objects with unknown or duplicate fields: Ignore, Warn or Strict.",
);
pub(super) const FORCE: Param = query(
    "force",
    "boolean",
    "Force an Apply request to take ownership of conflicting fields (apply patches only).",
);

/// The parameters of a write (create, replace).
pub(super) const WRITE_PARAMS: [&Param; 4] = [&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
/// The parameters of a patch: a write's and `force`.
pub(super) const PATCH_PARAMS: [&Param; 5] =
    [&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE];

pub(super) const LIST_PARAMS: &[Param] = &[
    query(
        "allowWatchBookmarks",
        "boolean",
        "Requests watch events with type BOOKMARK.",
    ),
    query(
        "continue",
        "string",
        "The continue token of a previous paginated list call.",
    ),
    query(
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields.",
    ),
    query(
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels.",
    ),
    query(
        "limit",
        "integer",
        "The maximum number of responses to return for a list call.",
    ),
    query(
        "resourceVersion",
        "string",
        "Constrains which resource versions the request may be served from.",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "How resourceVersion is applied to list calls: Exact or NotOlderThan.",
    ),
    query(
        "sendInitialEvents",
        "boolean",
        "With watch=true, starts the watch stream with synthetic events of the current state.",
    ),
    query(
        "timeoutSeconds",
        "integer",
        "Timeout for the list/watch call.",
    ),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
];

pub(super) const DELETE_PARAMS: &[Param] = &[
    query(
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    query(
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy.",
    ),
    query(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
    ),
];

pub(super) const LOG_PARAMS: &[Param] = &[
    query(
        "container",
        "string",
        "The container for which to stream logs.",
    ),
    query("follow", "boolean", "Follow the log stream of the pod."),
    query(
        "limitBytes",
        "integer",
        "The number of bytes to read from the server before terminating the log output.",
    ),
    query(
        "previous",
        "boolean",
        "Return previous terminated container logs.",
    ),
    query(
        "sinceSeconds",
        "integer",
        "A relative time in seconds before the current time from which to show logs.",
    ),
    query(
        "tailLines",
        "integer",
        "The number of lines from the end of the logs to show.",
    ),
    query(
        "timestamps",
        "boolean",
        "Add an RFC3339 timestamp at the beginning of every line of log output.",
    ),
];

pub(super) const EXEC_PARAMS: &[Param] = &[
    query(
        "command",
        "string",
        "The command to execute (repeated for each argument).",
    ),
    query(
        "container",
        "string",
        "The container in which to execute the command.",
    ),
    query(
        "stderr",
        "boolean",
        "Redirect the standard error stream of the pod.",
    ),
    query(
        "stdin",
        "boolean",
        "Redirect the standard input stream of the pod.",
    ),
    query(
        "stdout",
        "boolean",
        "Redirect the standard output stream of the pod.",
    ),
    query("tty", "boolean", "Allocate a terminal."),
];

pub(super) const PORTFORWARD_PARAMS: &[Param] =
    &[query("ports", "integer", "List of ports to forward.")];
pub(super) const PROXY_PARAMS: &[Param] =
    &[query("path", "string", "The path of the request to proxy.")];

pub(super) const JSON_YAML: &[&str] = &["application/json", "application/yaml"];
pub(super) const WATCHABLE: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
pub(super) const TEXT: &[&str] = &["text/plain"];
pub(super) const CONNECT: &[&str] = &["*/*"];
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];
