use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parses_valid_selectors() {
    // From upstream's TestSelectorParse.
    let ok = [
        "",
        "x=a,y=b,z=c",
        "x = a, y = b",
        "x!=a,y=b",
        "x=",
        "x= ",
        "x=,z= ",
        "!x",
        "x>1",
        "x>1,z<5",
        "x in (a)",
        "x in (a,b)",
        "x notin (a)",
        "x in (,a)",
        "x in (a,)",
        "x in ()",
        "x in (in)",
        "x in (notin)",
        "x, y",
        "a.b.c/d-e_f",
        "example.com/app in (web,api),!example.com/old",
    ];
    for s in ok {
        let parsed = LabelSelector::parse(s);
        assert!(parsed.is_ok(), "{s}: {parsed:?}");
    }
}

#[test]
fn rejects_invalid_selectors() {
    // From upstream's TestSelectorParse error cases.
    let bad = [
        "x=a||y=b",
        "x==a==b",
        "!x=a",
        "x<a",
        "x in ((a)",
        "x in (a b)",
        "x in a",
        "x notin",
        "x=a,,y=b",
        "x y",
        "(x)",
        ",x",
        "x=a b",
        "x=a,",
        "x>1,z<5,",
        "x,,y",
        "a b=c",
        "-a=b",
        "a=-b",
        "a=b c",
        "x>",
        "x>1.5",
        "=x",
        "x=(",
        "example.com/a/b=c",
        "Example.Com/a=b",
    ];
    for s in bad {
        let e = LabelSelector::parse(s).expect_err(s);
        assert_eq!(e.code, 400, "{s}");
    }
}

#[test]
fn error_messages_read_like_upstream() {
    let e = LabelSelector::parse("x in a").unwrap_err();
    assert_eq!(
        e.message,
        "unable to parse requirement: found 'a' expected: '('"
    );
    let e = LabelSelector::parse("x y").unwrap_err();
    assert_eq!(
        e.message,
        "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"
    );
    let e = LabelSelector::parse(",x").unwrap_err();
    assert_eq!(
        e.message,
        "found ',', expected: !, identifier, or 'end of string'"
    );
    let e = LabelSelector::parse("x,,y").unwrap_err();
    assert_eq!(e.message, "found ',', expected: identifier after ','");
    let e = LabelSelector::parse("a b=c").unwrap_err();
    assert_eq!(
        e.message,
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    let e = LabelSelector::parse("x=a b").unwrap_err();
    assert_eq!(e.message, "found 'b', expected: ',' or 'end of string'");
    let e = LabelSelector::parse("x=a,").unwrap_err();
    assert_eq!(e.message, "found '', expected: identifier after ','");
    let e = LabelSelector::parse("x>z").unwrap_err();
    assert_eq!(
        e.message,
        "unable to parse requirement: values[0]: Invalid value: \"z\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    let e = LabelSelector::parse("-a=b").unwrap_err();
    assert!(
        e.message.starts_with(
            "unable to parse requirement: key: Invalid value: \"-a\": name part must consist of"
        ),
        "{}",
        e.message
    );
    let e = LabelSelector::parse("a=-b").unwrap_err();
    assert!(
        e.message.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be"),
        "{}",
        e.message
    );
    let e = LabelSelector::parse("x ~ y").unwrap_err();
    assert_eq!(
        e.message,
        "unable to parse requirement: found '~', expected: in, notin, =, ==, !=, gt, lt"
    );
}

#[test]
fn round_trips_to_string() {
    // From upstream's TestSelectorParse string cases (requirements are sorted by key).
    let cases = [
        ("x=a,y=b,z=c", "x=a,y=b,z=c"),
        ("x = a, y = b", "x=a,y=b"),
        ("x!=a,y=b", "x!=a,y=b"),
        ("x=,z= ", "x=,z="),
        ("x= ", "x="),
        ("!x", "!x"),
        ("x>1", "x>1"),
        ("x>1,z<5", "x>1,z<5"),
        ("x in (b,a)", "x in (a,b)"),
        ("x notin (b, a, a)", "x notin (a,b)"),
        ("x in (,a)", "x in (,a)"),
        ("x in ()", "x in ()"),
        ("z,!y,x==1", "x==1,!y,z"),
        ("", ""),
    ];
    for (input, want) in cases {
        let s = LabelSelector::parse(input).unwrap();
        assert_eq!(s.to_string(), want, "{input}");
        // The printed form parses back to the same selector.
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s, "{input}");
    }
}

#[test]
fn matches_like_upstream() {
    // From upstream's TestSelectorMatches / TestEverything.
    let yes = [
        ("", vec![("x", "y")]),
        ("x=y", vec![("x", "y")]),
        ("x=y,z=w", vec![("x", "y"), ("z", "w")]),
        ("x!=y,z!=w", vec![("x", "z"), ("z", "a")]),
        ("notin=in", vec![("notin", "in")]),
        ("x", vec![("x", "z")]),
        ("!x", vec![("y", "z")]),
        ("x>1", vec![("x", "2")]),
        ("x<1", vec![("x", "0")]),
        ("x in (a,b)", vec![("x", "b")]),
        ("x notin (a,b)", vec![("x", "c")]),
        ("x notin (a,b)", vec![]),
        ("x!=y", vec![]),
        ("x=", vec![("x", "")]),
    ];
    for (sel, l) in yes {
        assert!(
            LabelSelector::parse(sel).unwrap().matches(&labels(&l)),
            "{sel} should match {l:?}"
        );
    }
    let no = [
        ("x=z", vec![]),
        ("x=y", vec![("x", "z")]),
        ("x=y,z=w", vec![("x", "w"), ("z", "w")]),
        ("x!=y,z!=w", vec![("x", "z"), ("z", "w")]),
        ("x", vec![("y", "z")]),
        ("!x", vec![("x", "z")]),
        ("x>1", vec![("x", "0")]),
        ("x>1", vec![("x", "a")]),
        ("x>1", vec![]),
        ("x<1", vec![("x", "1")]),
        ("x in (a,b)", vec![("x", "c")]),
        ("x in (a,b)", vec![]),
        ("x notin (a,b)", vec![("x", "a")]),
    ];
    for (sel, l) in no {
        assert!(
            !LabelSelector::parse(sel).unwrap().matches(&labels(&l)),
            "{sel} should not match {l:?}"
        );
    }
}

#[test]
fn from_k8s_selector() {
    let sel = metav1::LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            },
            metav1::LabelSelectorRequirement {
                key: "old".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
            metav1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "Exists".into(),
                values: None,
            },
            metav1::LabelSelectorRequirement {
                key: "zone".into(),
                operator: "NotIn".into(),
                values: Some(vec!["a".into()]),
            },
        ]),
    };
    let s = LabelSelector::from_k8s(&sel).unwrap();
    assert_eq!(
        s.to_string(),
        "app=web,env,!old,tier in (be,fe),zone notin (a)"
    );
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("env", "x")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "fe"),
        ("env", "x"),
        ("old", "1")
    ])));
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "fe"),
        ("env", "x"),
        ("zone", "a")
    ])));

    let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
    assert!(empty.is_empty());
    assert!(empty.matches(&labels(&[("any", "thing")])));

    let bad_op = metav1::LabelSelector {
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "Gt".into(),
            values: Some(vec!["1".into()]),
        }]),
        ..Default::default()
    };
    assert_eq!(
        LabelSelector::from_k8s(&bad_op).unwrap_err().message,
        "\"Gt\" is not a valid label selector operator"
    );
    let no_values = metav1::LabelSelector {
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "In".into(),
            values: None,
        }]),
        ..Default::default()
    };
    assert!(
        LabelSelector::from_k8s(&no_values)
            .unwrap_err()
            .message
            .contains("values set can't be empty")
    );
    let exists_with_values = metav1::LabelSelector {
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "Exists".into(),
            values: Some(vec!["x".into()]),
        }]),
        ..Default::default()
    };
    assert!(LabelSelector::from_k8s(&exists_with_values).is_err());
    let bad_key = metav1::LabelSelector {
        match_labels: Some(labels(&[("a b", "c")])),
        ..Default::default()
    };
    assert!(LabelSelector::from_k8s(&bad_key).is_err());
}

#[test]
fn label_requires_exact_match() {
    let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
    assert_eq!(s.requires_exact_match("a"), Some("1"));
    assert_eq!(s.requires_exact_match("b"), Some("2"));
    assert_eq!(s.requires_exact_match("c"), None);
    assert_eq!(s.requires_exact_match("d"), None);
    assert_eq!(s.requires_exact_match("e"), None);
}

#[test]
fn long_keys_and_values_are_checked() {
    let long = "a".repeat(64);
    assert!(LabelSelector::parse(&format!("{long}=x")).is_err());
    assert!(LabelSelector::parse(&format!("x={long}")).is_err());
    assert!(LabelSelector::parse(&format!("{}=x", "a".repeat(63))).is_ok());
    assert!(LabelSelector::parse("k=\u{e9}").is_err());
    assert!(LabelSelector::parse("x=a\0y").is_ok());
}

#[test]
fn field_selector_parses_and_prints() {
    // From upstream's TestSelectorParse / TestEscapeValue in fields.
    let cases = [
        ("", ""),
        ("a=b", "a=b"),
        ("a==b", "a=b"),
        ("a!=b", "a!=b"),
        ("b=c,a=b", "a=b,b=c"),
        ("a=b\\,c", "a=b\\,c"),
        ("a=b\\=c", "a=b\\=c"),
        ("a=b\\\\", "a=b\\\\"),
        ("a=", "a="),
        ("a!=", "a!="),
        ("a=b,,c=d", "a=b,c=d"),
    ];
    for (input, want) in cases {
        let s = FieldSelector::parse(input).unwrap();
        assert_eq!(s.to_string(), want, "{input}");
        assert_eq!(FieldSelector::parse(&s.to_string()).unwrap(), s, "{input}");
    }
    let s = FieldSelector::parse("metadata.name=a\\,b\\=c\\\\d").unwrap();
    assert_eq!(s.terms()[0].value, "a,b=c\\d");
    assert_eq!(s.terms()[0].field, "metadata.name");
}

#[test]
fn field_selector_rejects_bad_input() {
    for bad in ["a", "a,b=c", "a=b=c", "a=b\\c", "a=b\\", "a=b,c"] {
        let e = FieldSelector::parse(bad).expect_err(bad);
        assert_eq!(e.code, 400, "{bad}");
    }
    assert_eq!(
        FieldSelector::parse("abc").unwrap_err().message,
        "invalid selector: 'abc'; can't understand 'abc'"
    );
    assert_eq!(
        FieldSelector::parse("a=b\\c").unwrap_err().message,
        "invalid field selector: invalid escape sequence: \\c"
    );
    assert_eq!(
        FieldSelector::parse("a=b=c").unwrap_err().message,
        "invalid field selector: unescaped character in value: 61"
    );
}

#[test]
fn field_selector_matches() {
    let obj = |label: &str| -> Option<String> {
        match label {
            "metadata.name" => Some("web".into()),
            "metadata.namespace" => Some("default".into()),
            "spec.nodeName" => Some(String::new()),
            _ => None,
        }
    };
    assert!(FieldSelector::parse("").unwrap().matches(obj).unwrap());
    assert!(
        FieldSelector::parse("metadata.name=web")
            .unwrap()
            .matches(obj)
            .unwrap()
    );
    assert!(
        FieldSelector::parse("metadata.name==web,metadata.namespace!=kube-system")
            .unwrap()
            .matches(obj)
            .unwrap()
    );
    assert!(
        !FieldSelector::parse("metadata.name=db")
            .unwrap()
            .matches(obj)
            .unwrap()
    );
    assert!(
        FieldSelector::parse("spec.nodeName=")
            .unwrap()
            .matches(obj)
            .unwrap()
    );
    assert!(
        !FieldSelector::parse("spec.nodeName!=")
            .unwrap()
            .matches(obj)
            .unwrap()
    );
    let e = FieldSelector::parse("spec.foo=bar")
        .unwrap()
        .matches(obj)
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(e.message, "field label not supported: spec.foo");
    let s = FieldSelector::parse("spec.foo=bar").unwrap();
    assert_eq!(
        s.validate(|l| l.starts_with("metadata."))
            .unwrap_err()
            .message,
        "field label not supported: spec.foo"
    );
    assert!(
        FieldSelector::parse("metadata.name=x")
            .unwrap()
            .validate(|l| l.starts_with("metadata."))
            .is_ok()
    );
}

#[test]
fn field_requires_exact_match() {
    let s = FieldSelector::parse("metadata.name=x,metadata.namespace!=y").unwrap();
    assert_eq!(s.requires_exact_match("metadata.name"), Some("x"));
    assert_eq!(s.requires_exact_match("metadata.namespace"), None);
    assert_eq!(s.requires_exact_match("spec.nodeName"), None);
    let s = FieldSelector::parse("metadata.name==a\\,b").unwrap();
    assert_eq!(s.requires_exact_match("metadata.name"), Some("a,b"));
    assert_eq!(
        FieldSelector::from_pairs([("metadata.name", "z")]).requires_exact_match("metadata.name"),
        Some("z")
    );
}

#[test]
fn escaping_round_trips() {
    for v in ["", "a", "a,b", "a=b", "a\\b", "\\,=", "a!=b"] {
        assert_eq!(unescape_field_value(&escape_field_value(v)).unwrap(), v);
    }
}
