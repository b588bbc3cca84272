"""The official Kubernetes Python client against corten: list, create, read, patch, watch,
delete for core and apps resources, plus an error as a Status. Exits non-zero on failure."""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = [ns.metadata.name for ns in core.list_namespace().items]
assert "default" in names and "kube-system" in names, names

events = []
def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=10):
        if ev["object"].metadata.name == "py":
            events.append(ev["type"])
            if ev["type"] == "DELETED":
                w.stop()
t = threading.Thread(target=watcher)
t.start()

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"a": "1"})
core.create_namespaced_config_map("default", cm)
got = core.read_namespaced_config_map("py", "default")
assert got.data == {"a": "1"}, got.data
core.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
assert core.read_namespaced_config_map("py", "default").data == {"a": "1", "b": "2"}
listed = core.list_namespaced_config_map("default", label_selector="from=python").items
assert [c.metadata.name for c in listed] == ["py"], listed
core.delete_namespaced_config_map("py", "default")
t.join(15)
assert events == ["ADDED", "MODIFIED", "DELETED"], events

try:
    core.read_namespaced_config_map("py", "default")
    raise SystemExit("expected a 404")
except ApiException as e:
    assert e.status == 404, e.status

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="pyweb"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "pyweb"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "pyweb"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
        ),
    ),
)
apps.create_namespaced_deployment("default", dep)
d = apps.read_namespaced_deployment("pyweb", "default")
assert d.spec.strategy.type == "RollingUpdate", d.spec.strategy
scale = apps.read_namespaced_deployment_scale("pyweb", "default")
assert scale.spec.replicas == 2
apps.patch_namespaced_deployment_scale("pyweb", "default", {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment("pyweb", "default").spec.replicas == 3
print("python client OK")
