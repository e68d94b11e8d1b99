//! Config errors: every problem at once, each with its key path and line, in plain words.

use crate::support::{gateway_env, Client};
use portcullis::config::{self, ConfigError};
use std::path::Path;
use std::process::Command;

fn issues(yaml: &str) -> Vec<String> {
    match config::parse(yaml, "test.yaml", &|name| {
        (name == "SET").then(|| "value".into())
    }) {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(error) => error.issues(),
    }
}

const HEAD: &str = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n";

#[test]
fn all_errors_are_reported_at_once_with_paths_and_lines() {
    let error = config::load(Path::new("tests/fixtures/many_errors.yaml")).unwrap_err();
    assert_eq!(
        error.issues(),
        [
            "listeners[0].address: invalid address \"0.0.0.0:80800\": expected IP:PORT, e.g. 0.0.0.0:8080 (line 3)",
            "upstreams.users.timeouts.connect: invalid duration \"10\": unit must be ms, s, m or h (line 7)",
            "routes[0].match.path_prefix: \"users\" must start with \"/\" (line 10)",
            "routes[1].upstream: route \"orders\" names unknown upstream \"userz\" (known: users) (line 13)",
            "routes[2].name: duplicate route name \"users\" (line 14)",
            "routes[2]: route \"users\" needs exactly one of upstream, respond or redirect (line 14)",
            "routes[3].match.paht: unknown field `paht`, expected one of `host`, `path`, `path_prefix`, `path_regex`, `methods`, `headers`, `cookies`, `query` (line 18)",
        ]
    );
    let text = error.to_string();
    assert!(
        text.starts_with("7 errors in config:\n  listeners[0].address"),
        "{text}"
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_eq!(
        issues(&format!("{HEAD}routes: [{{ name: a, respond: {{ status: 200 }} }}]\nlimitz: {{}}\n")),
        ["limitz: unknown field `limitz`, expected one of `workers`, `listeners`, `admin`, `reload`, `access_log`, `shutdown_grace`, `limits`, `trusted_proxies`, `upstreams`, `jwt_providers`, `stores`, `filters`, `routes`, `tracing` (line 3)"]
    );
    assert_eq!(
        issues(&format!(
            "{HEAD}upstreams:\n  u:\n    discovery: {{ static: [127.0.0.1:1] }}\n    retry: 3\nroutes: [{{ name: a, upstream: u }}]\n"
        )),
        ["upstreams.u.retry: unknown field `retry`, expected one of `discovery`, `balance`, `protocol`, `timeouts`, `pool`, `tls`, `retries`, `outlier`, `health_check` (line 5)"]
    );
}

#[test]
fn values_are_checked() {
    let yaml = format!(
        "{HEAD}limits:\n  max_body_bytes: 10XB\n  header_read_timeout: 0s\ntrusted_proxies: [10.0.0.0/33]\n\
         routes:\n  - name: a\n    match: {{ path_regex: \"(\", methods: [\"G T\"], host: \"bad host\" }}\n    respond: {{ status: 99 }}\n"
    );
    assert_eq!(
        issues(&yaml),
        [
            "limits.max_body_bytes: invalid size \"10XB\": unit must be B, KiB, MiB, GiB, KB, MB or GB (line 3)",
            "limits.header_read_timeout: must be greater than zero (line 4)",
            "trusted_proxies[0]: invalid prefix \"10.0.0.0/33\": expected an address or ADDRESS/BITS, e.g. 10.0.0.0/8 or 2001:db8::/32 (line 5)",
            "routes[0].match.host: invalid host \"bad host\": expected a name like api.example.com or *.example.com (no port) (line 8)",
            "routes[0].match.path_regex: invalid regex \"(\": unclosed group (line 8)",
            "routes[0].match.methods[0]: invalid method \"G T\" (line 8)",
            "routes[0].respond.status: invalid status 99: expected 200-599 (line 9)",
        ]
    );
}

#[tokio::test]
async fn environment_interpolation() {
    let gw = gateway_env(
        &format!("{HEAD}routes: [{{ name: a, respond: {{ body: \"${{SET}} ${{UNSET:-fallback}}\" }} }}]\n"),
        &[("SET", "value")],
    );
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/").await.text(), "value fallback");
    assert_eq!(
        issues(&format!("{HEAD}routes: [{{ name: a, respond: {{ body: \"${{UNSET}}\" }} }}]\n")),
        ["routes[0].respond.body: environment variable UNSET is not set (use ${UNSET:-default} for a default) (line 2)"]
    );
}

#[test]
fn missing_empty_and_broken_files_give_one_clear_line() {
    let missing = config::load(Path::new("tests/fixtures/nope.yaml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert_eq!(
        missing.to_string(),
        "cannot read tests/fixtures/nope.yaml: No such file or directory (os error 2)"
    );
    let empty = config::load(Path::new("tests/fixtures/empty.yaml")).unwrap_err();
    assert_eq!(
        empty.to_string(),
        "tests/fixtures/empty.yaml is empty: it needs at least one listener and one route"
    );
    let syntax = config::load(Path::new("tests/fixtures/syntax.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        syntax.starts_with("tests/fixtures/syntax.yaml: YAML syntax error: "),
        "{syntax}"
    );
    assert!(syntax.contains("line 4"), "{syntax}");
}

/// A file that is valid YAML but no mapping (a stray word, a list) is named as a whole.
#[test]
fn a_file_that_is_no_mapping_is_one_clear_line() {
    assert_eq!(
        issues("admin_token\n"),
        ["(top level): expected a mapping of sections (listeners, upstreams, routes …), found a string (line 1)"]
    );
    assert_eq!(
        issues("- listeners\n- routes\n"),
        ["(top level): expected a mapping of sections (listeners, upstreams, routes …), found a list (line 1)"]
    );
}

#[test]
fn shipped_config_is_valid() {
    let config = config::load(Path::new("gateway.yaml")).expect("gateway.yaml must validate");
    assert!(config.route_table().iter().any(|row| row[0] == "hello"));
}

pub(crate) fn cli(args: &[&str]) -> (i32, String, String) {
    cli_env(args, &[])
}

/// [`cli`] with `vars` added to its environment.
pub(crate) fn cli_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("run portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_command_prints_the_routing_table_or_the_errors() {
    let (code, stdout, _) = cli(&["check", "-c", "gateway.yaml"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("hello") && stdout.contains("upstream demo"),
        "{stdout}"
    );
    assert!(stdout.contains("configuration OK"));

    let (code, stdout, stderr) = cli(&["check", "-c", "tests/fixtures/many_errors.yaml"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("routes[1].upstream: route \"orders\" names unknown upstream \"userz\" (known: users) (line 13)"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Error {"),
        "{stderr}"
    );

    let (code, _, stderr) = cli(&["-c", "tests/fixtures/nope.yaml"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "error: cannot read tests/fixtures/nope.yaml: No such file or directory (os error 2)"
    );

    let (code, stdout, _) = cli(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("portcullis "));
}

#[test]
fn one_error_never_hides_the_next() {
    // An unknown top-level key, a type error at the top, two errors in one route, two in one
    // listener, a bad list item followed by another: all reported in one run, in order.
    let yaml = "\
listeners:
  - { name: http, address: 127.0.0.1:0, tls: 5, extra: 1 }
limitz: {}
access_log: maybe
upstreams:
  u:
    discovery: { static: [127.0.0.1:1] }
    timeouts: { connect: [1], idle: {} }
routes:
  - name: a
    match: { paht: /x, methods: GET }
    upstream: 7
  - name: b
    match: { headers: [ { name: x, valu: 1 }, { name: y, regexp: z } ] }
    upstream: u
";
    assert_eq!(
        issues(yaml),
        [
            "limitz: unknown field `limitz`, expected one of `workers`, `listeners`, `admin`, `reload`, `access_log`, `shutdown_grace`, `limits`, `trusted_proxies`, `upstreams`, `jwt_providers`, `stores`, `filters`, `routes`, `tracing` (line 3)",
            "access_log: invalid type: string \"maybe\", expected a boolean (line 4)",
            "listeners[0].tls: invalid type: integer `5`, expected struct ListenerTls (line 2)",
            "listeners[0].extra: unknown field `extra`, expected one of `name`, `address`, `tls`, `filters` (line 2)",
            "upstreams.u.timeouts.connect: expected a duration or size, found a list (line 8)",
            "upstreams.u.timeouts.idle: expected a duration or size, found a mapping (line 8)",
            "routes[0].match.paht: unknown field `paht`, expected one of `host`, `path`, `path_prefix`, `path_regex`, `methods`, `headers`, `cookies`, `query` (line 11)",
            "routes[0].match.methods: invalid type: string \"GET\", expected a sequence (line 11)",
            "routes[0].upstream: invalid type: integer `7`, expected an upstream's name or { split: [{ upstream: NAME, weight: N }, ...] } (line 12)",
            "routes[1].match.headers[0].valu: unknown field `valu`, expected one of `name`, `value`, `regex` (line 14)",
            "routes[1].match.headers[1].regexp: unknown field `regexp`, expected one of `name`, `value`, `regex` (line 14)",
        ]
    );
}

#[test]
fn cache_targeted_fields_are_header_names_other_than_cache_control() {
    let yaml = format!(
        "{HEAD}upstreams:\n  u: {{ discovery: {{ static: [127.0.0.1:1] }} }}\n\
         routes:\n  - name: a\n    upstream: u\n    filters:\n\
         \x20     - cache: {{ targeted: [CDN-Cache-Control, Cache-Control, \"bad name\"] }}\n"
    );
    assert_eq!(
        issues(&yaml),
        [
            "routes[0].filters[0].cache.targeted[1]: Cache-Control is what targeted fields override; it cannot be one (line 8)",
            "routes[0].filters[0].cache.targeted[2]: invalid header name \"bad name\" (line 8)",
        ]
    );
}
