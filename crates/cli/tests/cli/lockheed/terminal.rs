//! `lockheed run` at a terminal: a pseudo-terminal that is the controlling terminal of a new
//! session (`setsid -c`), typed into as a user would.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::pty::openpty;
use tokio::process::{Child, Command};

use super::{PATIENCE, lock, locker};
use crate::harness::{COMMAND_TIMEOUT, Cluster};

/// The lockheed binary under test.
const LOCKHEED: &str = env!("CARGO_BIN_EXE_lockheed");

/// A program whose stdin, stdout and stderr are a pseudo-terminal, its controlling terminal.
struct AtTerminal {
    child: Child,
    /// The terminal's other side: what is written is typed, what is read is the screen.
    master: File,
    screen: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl AtTerminal {
    /// Starts `program args..` in a new session with a new pseudo-terminal as its controlling
    /// terminal, in the foreground, with the cluster's environment (as `Cluster::command`).
    /// `None` (the test is skipped) without util-linux's `setsid`.
    fn start(cluster: &Cluster, program: &str, args: &[&str]) -> Option<Self> {
        let pty = openpty(None, None).expect("a pseudo-terminal");
        let side = || Stdio::from(pty.slave.try_clone().expect("the terminal is shared"));
        let mut command = Command::new("setsid");
        command
            .args(["--wait", "--ctty", program])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", cluster.dir.path())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .current_dir(cluster.dir.path())
            .stdin(side())
            .stdout(side())
            .stderr(side())
            .kill_on_drop(true);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipped: no setsid to start a session with a terminal");
                return None;
            }
            Err(err) => panic!("setsid starts: {err}"),
        };
        // Only the program keeps the terminal open: reading the other side ends when it
        // exits.
        drop(command);
        drop(pty.slave);
        let master = File::from(pty.master);
        let screen = Arc::<Mutex<String>>::default();
        let reader = {
            let mut master = master.try_clone().expect("the terminal is shared");
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                // EIO once no process has the terminal open any more.
                while let Ok(n @ 1..) = master.read(&mut buffer) {
                    screen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            })
        };
        Some(Self {
            child,
            master,
            screen,
            reader,
        })
    }

    fn screen(&self) -> String {
        self.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the screen shows `text`.
    async fn wait_for(&self, text: &str) {
        let started = Instant::now();
        while !self.screen().contains(text) {
            assert!(
                started.elapsed() < PATIENCE,
                "{text:?} never appeared:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `keys`.
    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("typed");
    }

    /// Waits for the program to exit, and returns its status and the whole screen.
    async fn finish(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(COMMAND_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the program exits in time:\n{}", self.screen()))
            .expect("its status is read");
        let started = Instant::now();
        while !self.reader.is_finished() && started.elapsed() < PATIENCE {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (status, self.screen())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_reaches_the_command_once() {
    let cluster = Cluster::start().await;
    // Reading the terminal waits until the command has it.
    let command =
        "read go; trap 'echo got INT; exit 3' INT; echo ready; while :; do sleep 0.1; done";
    let Some(mut terminal) = AtTerminal::start(
        &cluster,
        LOCKHEED,
        &["-v", "run", "jobs", "--", "sh", "-c", command],
    ) else {
        return;
    };
    terminal.type_keys(b"go\n");
    terminal.wait_for("ready").await;
    terminal.type_keys(b"\x03");
    let (status, screen) = terminal.finish().await;
    assert_eq!(status.code(), Some(3), "{screen}");
    assert!(screen.contains("got INT"), "{screen}");
    // The terminal sent SIGINT to the command's process group, which had the terminal:
    // lockheed got nothing to pass on, and the command got it once.
    assert!(!screen.contains("passing SIGINT"), "{screen}");
    assert!(!lock(&cluster, "jobs").await.is_held(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reads_the_terminal_and_gives_it_back() {
    let cluster = Cluster::start().await;
    // A script without job control runs lockheed, then reads the terminal itself: it
    // can only if lockheed took the terminal back from the command.
    let script = format!(
        "{LOCKHEED} run jobs -- sh -c 'echo ready; read line; echo \"got $line\"'; \
         read again; echo \"then $again\""
    );
    let Some(mut terminal) = AtTerminal::start(&cluster, "sh", &["-c", &script]) else {
        return;
    };
    terminal.wait_for("ready").await;
    terminal.type_keys(b"hello\n");
    terminal.wait_for("got hello").await;
    terminal.type_keys(b"world\n");
    let (status, screen) = terminal.finish().await;
    assert_eq!(status.code(), Some(0), "{screen}");
    assert!(screen.contains("then world"), "{screen}");
    assert!(!lock(&cluster, "jobs").await.is_held(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_the_wait_is_a_progress_line() {
    let cluster = Cluster::start().await;
    let held = lockheed::Lock::new("jobs", locker(&cluster))
        .with_holder("alice")
        .with_reason("db restart")
        .try_acquire()
        .await
        .unwrap();
    let Some(terminal) = AtTerminal::start(
        &cluster,
        LOCKHEED,
        &["run", "jobs", "--holder", "bob", "--", "echo", "bob ran"],
    ) else {
        return;
    };
    // Redrawn in place (carriage return, erase the line) every second while it waits.
    terminal.wait_for("waiting 1s for lock").await;
    terminal.wait_for("waiting 2s for lock").await;
    held.release().await.unwrap();
    let (status, screen) = terminal.finish().await;
    assert_eq!(status.code(), Some(0), "{screen}");
    let progress = format!(
        "\r\x1b[2Klockheed: waiting 2s for lock \"jobs\" in namespace {}: held by alice (since ",
        cluster.ns()
    );
    assert!(screen.contains(&progress), "{screen:?}");
    assert!(
        screen.contains("reason \"db restart\"), 1/1 holders"),
        "{screen:?}"
    );
    // Log lines would have said the same once per change of holders, not every second.
    assert!(
        !screen.contains("waiting for lock \"jobs\": held by"),
        "{screen:?}"
    );
    // The last progress line is erased before the command's output.
    let before = &screen[..screen.find("bob ran").expect("the command ran")];
    let last = before.rfind("1/1 holders").expect("a progress line");
    assert!(before[last..].contains("\r\x1b[2K"), "{screen:?}");
}
