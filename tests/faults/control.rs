//! The control socket of `scripts/control-plane` (see `tools/control-plane/README.md`): one
//! request line, one JSON line back.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// `start` waits up to 120 s for a component to be ready; the socket answers after that.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(150);

/// The control plane a fault test runs in.
#[derive(Debug)]
pub struct ControlPlane {
    socket: PathBuf,
    /// How many etcd members it runs.
    pub etcd_members: usize,
}

impl ControlPlane {
    /// The control plane of `scripts/control-plane`, checked to answer; `None` (saying so on
    /// stderr) outside one, or when it runs fewer etcd members than `members`.
    ///
    /// # Panics
    ///
    /// When `LOCKHEED_CONTROL_PLANE` is set and its socket does not answer `status`: a fault
    /// test inside the script must never pass by doing nothing.
    pub async fn needed(test: &str, members: usize) -> Option<Self> {
        let Some(dir) = std::env::var_os("LOCKHEED_CONTROL_PLANE") else {
            eprintln!(
                "{test}: needs the real control plane and its control socket; run it inside \
                 scripts/control-plane{} -- cargo test ...",
                if members > 1 {
                    format!(" --etcd-members {members}")
                } else {
                    String::new()
                }
            );
            return None;
        };
        let mut control = Self {
            socket: PathBuf::from(dir).join("control.sock"),
            etcd_members: 0,
        };
        let status = control.request("status").await;
        control.etcd_members = status["etcd_members"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| panic!("status without etcd_members: {status}"));
        if control.etcd_members < members {
            eprintln!(
                "{test}: needs {members} etcd members, the control plane runs {}; run it inside \
                 scripts/control-plane --etcd-members {members} -- cargo test ...",
                control.etcd_members
            );
            return None;
        }
        Some(control)
    }

    /// Sends `request` and returns the answer.
    ///
    /// # Panics
    ///
    /// When the socket does not answer, answers something that is not JSON, or answers
    /// `"ok": false`.
    pub async fn request(&self, request: &str) -> Value {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.send(request))
            .await
            .unwrap_or_else(|_| panic!("the control socket did not answer {request:?} in time"))
            .unwrap_or_else(|err| {
                panic!(
                    "the control socket {} did not answer {request:?}: {err}",
                    self.socket.display()
                )
            });
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|err| panic!("{request:?} answered {answer:?}: {err}"));
        assert_eq!(answer["ok"], true, "{request:?} failed: {answer}");
        answer
    }

    async fn send(&self, request: &str) -> std::io::Result<String> {
        let stream = UnixStream::connect(&self.socket).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{request}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok(line)
    }

    /// The current etcd leader (`etcd-N`).
    pub async fn etcd_leader(&self) -> String {
        let answer = self.request("etcd-leader").await;
        answer["leader"]
            .as_str()
            .unwrap_or_else(|| panic!("no leader in {answer}"))
            .to_owned()
    }
}
