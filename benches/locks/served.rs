//! Where the in-process fake API server runs: on a runtime and thread of its own, apart from
//! the clients, as it would be in another process. The clients (every lockheed and
//! kube-lease-manager "process" of a scenario) share the benchmark's runtime.

use std::ops::Deref;

use lockheed::testing::{FakeApiServer, FakeApiServerBuilder};
use tokio::runtime::Runtime;

/// A fake API server running on its own one-thread runtime; it stops when dropped.
pub struct Served {
    server: Option<FakeApiServer>,
    runtime: Option<Runtime>,
}

impl Served {
    /// A server with the default options.
    pub async fn start() -> Self {
        Self::with(FakeApiServer::builder()).await
    }

    /// A server with these options.
    pub async fn with(builder: FakeApiServerBuilder) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()
            .expect("a runtime for the server");
        // Started from a task of its runtime, the server's tasks run there.
        let server = runtime
            .spawn(builder.start())
            .await
            .expect("the server's start")
            .expect("server starts");
        Self {
            server: Some(server),
            runtime: Some(runtime),
        }
    }
}

impl Served {
    /// The server and the runtime it runs on, for a caller that keeps them otherwise (it must
    /// drop the server first, and shut the runtime down in the background, as `Drop` does).
    pub fn into_parts(mut self) -> (FakeApiServer, Runtime) {
        let server = self.server.take().expect("running");
        let runtime = self.runtime.take().expect("running");
        (server, runtime)
    }
}

impl Deref for Served {
    type Target = FakeApiServer;

    fn deref(&self) -> &FakeApiServer {
        self.server.as_ref().expect("running")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            // Dropped from a client task: a runtime cannot wait for its threads there.
            runtime.shutdown_background();
        }
    }
}
