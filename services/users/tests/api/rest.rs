//! `/api/v1/users` over HTTP: access rules, validation and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_jwt::Role;
use tessera_testkit::jwks::TestIssuer;
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn me_returns_the_callers_profile() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    let response = app.get("/api/v1/users/me", &user.token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], user.id.to_string());
    assert_eq!(body["email"], user.email);
    assert_eq!(body["display_name"], "Test User");
    assert_eq!(body["role"], "user");
    for field in ["created_at", "updated_at"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let stranger = TestIssuer::start().await.token(user.id, Role::Admin);

    let anonymous = tessera_testkit::get(app.url("/api/v1/users/me"))
        .await
        .unwrap();
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_problem(anonymous, 401, None).await;
    for token in ["not-a-jwt", &stranger] {
        let response = app.get(&format!("/api/v1/users/{}", user.id), token).await;
        assert_problem(response, 401, None).await;
    }
}

#[tokio::test]
async fn a_user_cannot_see_change_or_delete_another() {
    let app = spawn_app().await;
    let owner = app.create_user(Role::User).await;
    let other = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", owner.id);

    let read = app.get(&path, &other.token).await;
    let body = assert_problem(read, 404, None).await;
    assert!(!body.to_string().contains(&owner.email));
    let patched = app
        .patch(&path, &other.token, json!({ "display_name": "Mallory" }))
        .await;
    assert_problem(patched, 404, None).await;
    assert_problem(app.delete(&path, &other.token).await, 404, None).await;

    assert_eq!(app.display_name(&owner).await, "Test User");
}

#[tokio::test]
async fn an_admin_sees_and_changes_anyone() {
    let app = spawn_app().await;
    let admin = app.create_user(Role::Admin).await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);

    assert_eq!(app.get(&path, &admin.token).await.status(), StatusCode::OK);
    let promoted = app
        .patch(
            &path,
            &admin.token,
            json!({ "role": "admin", "display_name": "Promoted" }),
        )
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let body: Value = promoted.json().await.unwrap();
    assert_eq!(
        (body["role"].as_str(), body["display_name"].as_str()),
        (Some("admin"), Some("Promoted"))
    );
}

#[tokio::test]
async fn an_owner_renames_themselves_but_cannot_change_their_role() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);

    let body = app.rename(&user, "  Ada Lovelace  ").await;
    assert_eq!(body["display_name"], "Ada Lovelace");
    assert_ne!(body["updated_at"], body["created_at"]);

    let escalation = app
        .patch(&path, &user.token, json!({ "role": "admin" }))
        .await;
    assert_problem(escalation, 403, None).await;
    let me: Value = app
        .get("/api/v1/users/me", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "user");
}

#[tokio::test]
async fn an_empty_patch_changes_nothing() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);
    let before: Value = app.get(&path, &user.token).await.json().await.unwrap();

    let response = app.patch(&path, &user.token, json!({})).await;

    assert_eq!(response.status(), StatusCode::OK);
    let after: Value = response.json().await.unwrap();
    assert_eq!(after, before);
}

#[tokio::test]
async fn invalid_patches_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);

    let cases = [
        (json!({ "display_name": "" }), "display_name"),
        (json!({ "display_name": "x".repeat(65) }), "display_name"),
        (json!({ "display_name": "bad\u{202E}name" }), "display_name"),
        (json!({ "display_name": 42 }), "display_name"),
        (json!({ "role": "root" }), "role"),
        (json!({ "nickname": "x" }), "nickname"),
    ];
    for (body, field) in cases {
        let response = app.patch(&path, &user.token, body).await;
        let problem = assert_problem(response, 422, None).await;
        assert!(
            problem.to_string().contains(field),
            "{field} not named: {problem}"
        );
    }
    assert_eq!(app.display_name(&user).await, "Test User");
}

#[tokio::test]
async fn malformed_wrongly_typed_and_oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);

    let malformed = app
        .patch_raw(
            &path,
            &user.token,
            "application/json",
            "{\"display_name\":".to_owned(),
        )
        .await;
    assert_problem(malformed, 400, None).await;
    let text = app
        .patch_raw(&path, &user.token, "text/plain", "{}".to_owned())
        .await;
    assert_problem(text, 415, None).await;
    let huge = format!("{{\"display_name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let oversized = app
        .patch_raw(&path, &user.token, "application/json", huge)
        .await;
    assert_problem(oversized, 413, None).await;
}

#[tokio::test]
async fn a_malformed_id_is_refused_naming_it() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    let response = app.get("/api/v1/users/not-a-uuid", &user.token).await;

    assert_problem(response, 422, Some("id")).await;
}

#[tokio::test]
async fn a_deleted_profile_is_gone() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);

    let deleted = app.delete(&path, &user.token).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    assert_problem(app.get(&path, &user.token).await, 404, None).await;
    assert_problem(app.get("/api/v1/users/me", &user.token).await, 404, None).await;
    assert_problem(app.delete(&path, &user.token).await, 404, None).await;
}

#[tokio::test]
async fn an_admin_pages_through_every_user_with_cursors() {
    let app = spawn_app().await;
    let admin = app.create_user(Role::Admin).await;
    let mut expected = vec![admin.id];
    for _ in 0..4 {
        expected.push(app.create_user(Role::User).await.id);
    }
    expected.sort();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=2&cursor={cursor}"),
            None => "?limit=2".to_owned(),
        };
        let response = app
            .get(&format!("/api/v1/users{query}"), &admin.token)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(Uuid::parse_str(item["id"].as_str().unwrap()).unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn only_admins_list_users() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    assert_problem(app.get("/api/v1/users", &user.token).await, 403, None).await;
}

#[tokio::test]
async fn bad_paging_parameters_are_refused_naming_them() {
    let app = spawn_app().await;
    let admin = app.create_user(Role::Admin).await;

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%21%21", "cursor"),
    ] {
        let response = app
            .get(&format!("/api/v1/users?{query}"), &admin.token)
            .await;
        assert_problem(response, 422, Some(field)).await;
    }
    let unknown = app.get("/api/v1/users?page=2", &admin.token).await;
    let problem = assert_problem(unknown, 422, None).await;
    assert!(problem.to_string().contains("page"), "{problem}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;

    let response = tessera_testkit::get(app.url("/openapi.json"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let api: Value = response.json().await.unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in ["User", "UpdateUser", "UserPage", "Problem", "Role"] {
        assert!(
            api["components"]["schemas"][schema].is_object(),
            "no {schema} schema"
        );
    }
    let operations = [
        ("/api/v1/users/me", "get", vec!["200", "401", "404"]),
        (
            "/api/v1/users/{id}",
            "get",
            vec!["200", "401", "404", "422"],
        ),
        (
            "/api/v1/users/{id}",
            "patch",
            vec!["200", "400", "401", "403", "404", "413", "415", "422"],
        ),
        ("/api/v1/users/{id}", "delete", vec!["204", "401", "404"]),
        ("/api/v1/users", "get", vec!["200", "401", "403", "422"]),
    ];
    for (path, method, statuses) in operations {
        let operation = &api["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} undocumented");
        assert_eq!(
            operation["security"][0]["bearer"],
            json!([]),
            "{method} {path}"
        );
        for status in statuses.iter().chain(&["500", "503", "504"]) {
            assert!(
                operation["responses"][*status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
        if let Some(problem) =
            operation["responses"]["401"]["content"].get("application/problem+json")
        {
            assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
        } else {
            panic!("{method} {path}: 401 is not problem+json");
        }
    }
    // Only an operation that takes a body can answer that its body is wrong.
    for status in ["413", "415"] {
        assert!(api["paths"]["/api/v1/users/me"]["get"]["responses"][status].is_null());
    }
    assert_eq!(
        api["paths"].as_object().unwrap().len(),
        3,
        "undocumented or stray paths"
    );
}
