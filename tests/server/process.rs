//! `stash serve` as the built binary, for the tests that need a real process
//! (signals, descriptor limits, its log lines).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `stash serve` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub probe_addr: std::net::SocketAddr,
    /// Its JSON log lines, as they arrive.
    pub logs: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line matching `pred`.
    pub fn wait_log(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line within {within:?}: {:?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `stash --log-format json serve` on free ports (through `bash -c` when
/// `shell_prefix` is set, e.g. `ulimit -n 1024`), waiting until it serves.
pub fn spawn(cwd: &Path, shell_prefix: Option<&str>, extra: &[&str]) -> Server {
    let bin = env!("CARGO_BIN_EXE_stash");
    let mut args: Vec<String> = [
        "--log-format",
        "json",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--probe-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = match shell_prefix {
        Some(prefix) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("{prefix} && exec \"$0\" \"$@\""))
                .arg(bin)
                .args(&args);
            c
        }
        None => {
            let mut c = Command::new(bin);
            c.args(&args);
            c
        }
    };
    let mut child = cmd
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if v["message"] == "serving webhooks" {
                let _ = tx.send((
                    v["addr"].as_str().unwrap().parse().unwrap(),
                    v["probe_addr"].as_str().unwrap().parse().unwrap(),
                ));
            }
            sink.lock().unwrap().push(v);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((addr, probe_addr)) => Server {
            child,
            addr,
            probe_addr,
            logs,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {:?}", logs.lock().unwrap());
        }
    }
}
