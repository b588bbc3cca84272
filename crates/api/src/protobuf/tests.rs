use super::*;
#[test]
fn dump() {
    for f in [
        "configmap",
        "secret",
        "deployment",
        "namespace",
        "resourcequota",
        "poddisruptionbudget",
        "tokenrequest",
        "deployment-full",
        "eviction",
    ] {
        let b = std::fs::read(format!(
            "{}/src/protobuf/testdata/{f}.pb",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        println!(
            "{f}: {}",
            serde_json::to_string(&decode(&b).unwrap()).unwrap()
        );
    }
}
