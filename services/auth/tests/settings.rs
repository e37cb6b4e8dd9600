//! Settings that stop startup name the variable at fault.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[tokio::test]
async fn a_missing_or_bad_key_directory_stops_startup_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let settings: Result<auth::Settings, _> = tessera_config::from_vars(
        "AUTH_",
        vec![(
            "AUTH_SIGNING_KEYS_DIR".to_owned(),
            dir.path().display().to_string(),
        )],
    );
    let error = settings.unwrap().signer().unwrap_err();
    // Named by its field; the runtime adds the service's prefix before reporting it.
    let reported = error.in_scope(<auth::Auth as tessera_runtime::Service>::SPEC.env_prefix);
    assert_eq!(reported.variable, "AUTH_SIGNING_KEYS_DIR");
    let missing: Result<auth::Settings, _> = tessera_config::from_vars("AUTH_", Vec::new());
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("AUTH_SIGNING_KEYS_DIR")
    );
}
