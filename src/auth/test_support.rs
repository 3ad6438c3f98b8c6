//! Test helpers shared by the credential tests: a policy source without files and a
//! token endpoint on a local port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::PolicySource;
use crate::config::resources::{BackendSecurityPolicySpec, ObjectRef};
use crate::secret::SecretValue;

/// A policy parsed from YAML, with Secrets as `name/key` → value.
pub struct TestSource {
    pub spec: BackendSecurityPolicySpec,
    pub secrets: HashMap<String, String>,
    pub name: String,
    pub problems: Vec<String>,
}

impl TestSource {
    pub fn new(name: &str, spec_yaml: &str, secrets: &[(&str, &str)]) -> Self {
        TestSource {
            spec: serde_yaml_ng::from_str(spec_yaml).unwrap(),
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            name: format!("test/{name}"),
            problems: Vec::new(),
        }
    }
}

impl PolicySource for TestSource {
    fn spec(&self) -> &BackendSecurityPolicySpec {
        &self.spec
    }
    fn header_secret(&mut self, field: &str, secret: &ObjectRef, key: &str) -> Option<SecretValue> {
        self.secret_text(field, secret, key)
    }
    fn secret_text(&mut self, field: &str, secret: &ObjectRef, key: &str) -> Option<SecretValue> {
        let found = self.secrets.get(&format!("{}/{key}", secret.name)).cloned();
        if found.is_none() {
            self.problems
                .push(format!("{field}: no {}/{key}", secret.name));
        }
        found.map(SecretValue::new)
    }
    fn secret_name(&self, secret: &ObjectRef) -> String {
        secret.name.clone()
    }
    fn policy_name(&self) -> String {
        self.name.clone()
    }
    fn problem(&mut self, field: &str, message: String, fix: String) {
        self.problems.push(format!("{field}: {message} ({fix})"));
    }
}

/// A token endpoint that answers each request with the next of `answers` (the last
/// one repeats; `{uri}` in an answer becomes its own URI), and records the request bodies.
pub struct FakeTokenEndpoint {
    pub uri: String,
    pub requests: Arc<AtomicUsize>,
    pub bodies: Arc<StdMutex<Vec<String>>>,
}

pub async fn fake_token_endpoint(answers: Vec<(u16, String)>) -> FakeTokenEndpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(StdMutex::new(Vec::new()));
    let (count, seen, own) = (requests.clone(), bodies.clone(), uri.clone());
    tokio::spawn(async move {
        let uri = own;
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = read_request_body(&mut socket).await;
            let n = count.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(body);
            let (status, answer) = answers[n.min(answers.len() - 1)].clone();
            let answer = answer.replace("{uri}", &uri);
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    FakeTokenEndpoint {
        uri,
        requests,
        bodies,
    }
}

async fn read_request_body(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return body.to_string();
            }
        }
    }
    String::new()
}

pub fn token_answer(token: &str, expires_in: u64) -> (u16, String) {
    (
        200,
        format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#),
    )
}

/// An environment of `vars` only, in place of the process's.
pub fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// A form-encoded body (what a token endpoint receives), decoded.
pub fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}
