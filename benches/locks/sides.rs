//! The two servers of a real-server scenario, measured side by side in one run so that every
//! figure reads as a ratio (the machine is shared and noisy): the in-process fake server, on a
//! thread of its own as in scenarios 1 to 7, and a fresh namespace of the real cluster of
//! `KUBECONFIG`. Both are a [`TestCluster`], so the scenarios are written once: request counts
//! are what the fake server received, or on the real cluster what this side's clients sent.

use kube::config::KubeConfigOptions;
use lockheed::KubeLocker;
use lockheed::testing::TestCluster;
use tokio::runtime::Runtime;

use crate::report::Counts;
use crate::served::Served;

/// One server of a side-by-side scenario; it stops (the fake) when dropped.
pub struct Side {
    cluster: Option<TestCluster>,
    /// The fake server's runtime, on a thread of its own.
    runtime: Option<Runtime>,
}

impl Side {
    /// The fake server, on a runtime and thread of its own (see `served.rs`).
    pub async fn fake() -> Self {
        let (server, runtime) = Served::start().await.into_parts();
        Self {
            cluster: Some(TestCluster::on(server)),
            runtime: Some(runtime),
        }
    }

    /// A fresh namespace of the real cluster.
    pub async fn real() -> Self {
        let cluster = TestCluster::real()
            .await
            .expect("the real cluster of KUBECONFIG (scripts/control-plane gives one)");
        Self {
            cluster: Some(cluster),
            runtime: None,
        }
    }

    /// Both, fake first.
    pub async fn both() -> [Self; 2] {
        [Self::fake().await, Self::real().await]
    }

    pub fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().expect("running")
    }

    pub fn is_real(&self) -> bool {
        self.cluster().is_real()
    }

    /// `fake` or `real`, for figure names.
    pub fn name(&self) -> &'static str {
        if self.is_real() { "real" } else { "fake" }
    }

    pub fn namespace(&self) -> &str {
        self.cluster().namespace()
    }

    /// A locker of its own client (its own connections): another process, as far as the
    /// server can tell. Its requests are counted.
    pub fn locker(&self, process: &str) -> KubeLocker {
        KubeLocker::new(self.cluster().client_for(process), self.namespace())
    }

    /// A client of its own made from the kubeconfig alone, without `TestCluster`'s layers
    /// (the request counter, and the hold of a paused clock, which costs a blocking task per
    /// request): for the server's own floor and ceiling. On the fake server its requests are
    /// counted all the same.
    pub async fn plain_client(&self) -> kube::Client {
        let config = kube::Config::from_custom_kubeconfig(
            self.cluster().kubeconfig(),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("a config");
        kube::Client::try_from(config).expect("a client")
    }

    /// Requests since the last [`reset`](Self::reset).
    pub fn counts(&self) -> Counts {
        Counts::of(&self.cluster().counts())
    }

    pub fn reset(&self) {
        self.cluster().reset_counters();
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        drop(self.cluster.take());
        if let Some(runtime) = self.runtime.take() {
            // Dropped from a client task: a runtime cannot wait for its threads there.
            runtime.shutdown_background();
        }
    }
}
