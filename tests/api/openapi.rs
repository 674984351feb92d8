//! The OpenAPI document: valid OpenAPI 3.1 in what can be checked here
//! (structure, unique operation ids, a description on every response, every
//! `$ref` resolving, the standard errors, id patterns), describing every
//! route of the router, and only the routes this server serves. The full
//! validator and the fuzzer run in `scripts/test.d/20-openapi.sh`.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, router_routes, spawn_app, spawn_app_with, unknown_id};
use crate::on_both_backends;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn document(app: &TestApp) -> Value {
    let res = app.get_anonymous("/v1/openapi.json").await;
    res.expect(200).clone()
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref"
                    && let Some(target) = child.as_str()
                {
                    out.push((at.clone(), target));
                }
                refs(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The object a local `$ref` points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), operation));
            }
        }
    }
    out
}

async fn the_document_is_valid_openapi_3_1(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.dev = true).await else { return };
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "{}", doc["info"]);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["user_token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["api_key"]["scheme"], "bearer", "{schemes}");

    // Every $ref resolves.
    let mut all = Vec::new();
    refs(&doc, String::new(), &mut all);
    assert!(all.len() > 100, "{}", all.len());
    let dangling: Vec<_> = all.iter().filter(|(_, target)| resolve(&doc, target).is_none()).collect();
    assert!(dangling.is_empty(), "unresolved $refs: {dangling:?}");

    let mut ids = HashSet::new();
    for (path, method, operation) in operations(&doc) {
        let name = format!("{} {path}", method.to_uppercase());
        // Unique operation ids that read as method names.
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{name} has no operationId"));
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}: {id}");
        assert!(ids.insert(id.to_owned()), "{name}: operationId {id} is used twice");
        // Every response has a description; errors are the contract's body.
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{name}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{name}: no success answer");
        for (status, response) in responses {
            let response = match response.get("$ref").and_then(Value::as_str) {
                Some(target) => resolve(&doc, target).expect("resolved above"),
                None => response,
            };
            let words = response["description"].as_str().unwrap_or("");
            assert!(!words.trim().is_empty(), "{name} {status}: no description");
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{name} {status}"
                );
            }
        }
        // Whatever every route answers: rate limits and capacity.
        for status in ["429", "503"] {
            assert!(responses.contains_key(status), "{name} lacks {status}");
        }
        let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            assert!(responses.contains_key("401"), "{name} needs credentials but lacks 401");
        }
        let params = operation["parameters"].as_array().cloned().unwrap_or_default();
        for segment in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            let declared = params.iter().find(|p| p["name"] == segment && p["in"] == "path");
            let declared = declared.unwrap_or_else(|| panic!("{name}: path parameter {segment} is not declared"));
            assert_eq!(declared["required"], true, "{name} {segment}");
            assert!(responses.contains_key("400") && responses.contains_key("404"), "{name}: ids in the path");
        }
        if operation["requestBody"]["content"]["application/json"].is_object() {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{name} takes JSON but lacks {status}");
            }
        }
        if method == "post" && secured {
            let idempotency = params.iter().any(|p| p["$ref"] == "#/components/parameters/IdempotencyKey");
            assert!(idempotency, "{name}: an authenticated POST takes Idempotency-Key");
        }
        // Lists are documented as they are: {"data": [...], "has_more"}.
        if method == "get" && params.iter().any(|p| p["name"] == "starting_after") {
            let schema = &responses["200"]["content"]["application/json"]["schema"];
            let schema = resolve(&doc, schema["$ref"].as_str().expect("a named list")).expect("list schema");
            assert_eq!(schema["properties"]["data"]["type"], "array", "{name}: {schema}");
            assert_eq!(schema["properties"]["has_more"]["type"], "boolean", "{name}: {schema}");
        }
    }
    assert!(ids.contains("list_orgs") && ids.contains("get_org") && ids.contains("create_dev_token"), "{ids:?}");

    // Ids in paths carry their prefix pattern, and it matches real ids only.
    let org_id = &doc["components"]["schemas"]["OrgId"];
    let pattern = org_id["pattern"].as_str().expect("OrgId pattern");
    assert!(pattern.starts_with("^org_"), "{pattern}");
    let get_org = &doc["paths"]["/v1/orgs/{org}"]["get"]["parameters"];
    assert!(
        get_org.as_array().expect("params").iter().any(|p| p["schema"]["$ref"] == "#/components/schemas/OrgId"),
        "{get_org}"
    );
    // Enums: statuses, roles, event types, the catalog's names.
    let schemas = &doc["components"]["schemas"];
    let enumeration = |name: &str| -> Vec<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum: {}", schemas[name]))
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    assert!(enumeration("SubscriptionStatus").contains(&"past_due".to_owned()));
    assert_eq!(enumeration("Role"), ["owner", "admin", "member"]);
    assert!(enumeration("Feature").contains(&"audit_log".to_owned()));
    assert!(enumeration("EventType").contains(&"member.role_changed".to_owned()));
    assert_eq!(enumeration("PlanForSale"), ["business", "enterprise"]);
    // One named schema per event type, and the webhooks that deliver them.
    assert_eq!(schemas["MemberRoleChangedEvent"]["properties"]["type"]["const"], "member.role_changed");
    assert!(schemas["Event"]["oneOf"].as_array().is_some_and(|o| o.len() == enumeration("EventType").len()));
    assert!(doc["webhooks"]["subscription.updated"]["post"]["requestBody"].is_object(), "{}", doc["webhooks"]);
}

async fn every_route_of_the_router_is_in_the_document(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.dev = true).await else { return };
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    let routes = router_routes();
    assert!(routes.len() >= 40, "the router's routes were not read: {routes:?}");
    let mut missing = Vec::new();
    for (path, methods) in &routes {
        // The portal's HTML pages are for browsers, not part of the JSON API.
        if path.starts_with("/portal/") {
            continue;
        }
        assert!(!methods.is_empty(), "no method read for {path}");
        for method in methods {
            if paths.get(path.as_str()).and_then(|p| p.get(method.as_str())).is_none() {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(missing.is_empty(), "the OpenAPI document lacks: {missing:?}");
    // And the document names no route the server does not have: each
    // answers something other than the router's "no such route".
    for (path, method, _) in operations(&doc) {
        let concrete = path
            .replace("{org}", &unknown_id("org"))
            .replace("{user}", &unknown_id("usr"))
            .replace("{inv}", &unknown_id("inv"))
            .replace("{res}", &unknown_id("res"))
            .replace("{id}", "cs_unknown");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let res = app.send(method.clone(), &concrete, None, None).await;
        let unrouted = res.body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no such route"));
        assert!(!unrouted && res.status.as_u16() != 405, "{method} {path} is documented but not routed: {}", res.body);
    }
}

async fn dev_and_sandbox_routes_are_documented_only_where_served(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let doc = document(&app).await;
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    assert!(!paths.iter().any(|p| p.starts_with("/dev/") || p.starts_with("/sandbox/")), "{paths:?}");
    assert!(paths.iter().any(|p| *p == "/v1/orgs"), "{paths:?}");
    let dev = spawn_app_with(backend, |config| config.dev = true).await.expect("a second app");
    let doc = document(&dev).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/dev/token") && paths.contains_key("/sandbox/checkout/{id}"), "{:?}", paths.keys());
}

async fn a_query_string_it_cannot_read_gets_the_error_body(backend: Backend) {
    // Found by schemathesis: `?type=a&type=b` was answered in plain text.
    let Some(app) = spawn_app(backend).await else { return };
    let owner = app.user("owner@example.com").await;
    let org = app.team(&owner, "Acme").await;
    let res = app.get(&format!("/v1/orgs/{org}/resources?type=customers&type=clients"), &owner.token).await;
    res.expect_error(400, "invalid_request");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("type")), "{}", res.body);
    let res = app
        .get(&format!("/v1/orgs/{org}/resources/{}/access?user_id=a&user_id=b", unknown_id("res")), &owner.token)
        .await;
    res.expect_error(400, "invalid_request");
    assert_eq!(app.count("SELECT COUNT(*) FROM resources").await, 0);
}

async fn a_whole_number_written_with_a_fraction_is_that_integer(backend: Backend) {
    // Found by schemathesis: JSON Schema reads `5.0` as the integer 5, the server refused it.
    let Some(app) = spawn_app(backend).await else { return };
    let owner = app.user("owner@example.com").await;
    let org = app.team(&owner, "Acme").await;
    let key = app.api_key().await;
    let res = app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 7.0}})).await;
    assert_eq!(res.expect(200)["limits"]["customers"]["limit"], 7, "{}", res.body);
    // A real fraction is still refused, naming the field, and changes nothing.
    let res = app.put(&format!("/v1/orgs/{org}/overrides"), &key, json!({"limits": {"customers": 7.5}})).await;
    res.expect_error(422, "invalid_request");
    assert_eq!(res.body["error"]["param"], "limits.customers", "{}", res.body);
    let res = app.get(&format!("/v1/orgs/{org}/entitlements"), &key).await;
    assert_eq!(res.expect(200)["limits"]["customers"]["limit"], 7);
}

on_both_backends!(
    the_document_is_valid_openapi_3_1,
    every_route_of_the_router_is_in_the_document,
    dev_and_sandbox_routes_are_documented_only_where_served,
    a_query_string_it_cannot_read_gets_the_error_body,
    a_whole_number_written_with_a_fraction_is_that_integer,
);
