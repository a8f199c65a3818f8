//! Optimistic concurrency under contention: every write is a compare-and-swap.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use lockheed_fake_apiserver::Verb;
use tokio::sync::Barrier;

use crate::common::{cm, configmaps, create, data, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_two_hundred_increments_each_end_at_1600() {
    let server = crate::common::server().await;
    let api = configmaps(&server);
    create(&api, &cm("counter", &[("n", "0")])).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0_u64;
            for _ in 0..200 {
                loop {
                    let mut current = api.get("counter").await.unwrap();
                    let n: u64 = data(&current, "n").unwrap().parse().unwrap();
                    current.data = Some([("n".to_owned(), (n + 1).to_string())].into());
                    match api
                        .replace("counter", &PostParams::default(), &current)
                        .await
                    {
                        Ok(_) => break,
                        Err(err) => {
                            assert_eq!(status(err).0, 409, "only conflicts are expected");
                            conflicts += 1;
                        }
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let end = api.get("counter").await.unwrap();
    assert_eq!(data(&end, "n"), Some("1600"));
    let counts = server.counts();
    assert_eq!(counts.get(Verb::Update), 1600 + conflicts);
    let conflicted = server
        .requests()
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    assert_eq!(conflicted as u64, conflicts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_writer_wins_each_round() {
    let server = crate::common::server().await;
    let api: Api<ConfigMap> = configmaps(&server);
    create(&api, &cm("race", &[("winner", "")])).await;
    for round in 0..20 {
        let seen = api.get("race").await.unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let (api, barrier, mut mine) = (api.clone(), Arc::clone(&barrier), seen.clone());
            tasks.push(tokio::spawn(async move {
                mine.data = Some([("winner".to_owned(), format!("{round}-{writer}"))].into());
                barrier.wait().await;
                api.replace("race", &PostParams::default(), &mine).await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(won) => winners.push(data(&won, "winner").unwrap().to_owned()),
                Err(err) => assert_eq!(status(err), (409, "Conflict".to_owned())),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = api.get("race").await.unwrap();
        assert_eq!(data(&stored, "winner"), Some(winners[0].as_str()));
    }
}
