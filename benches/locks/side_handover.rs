//! Scenario 10: handover latency on both servers, as scenario 2 measures it (a holder with a
//! 15 s lease releases early while one waiter of another process waits in the queue), read
//! against each server's own floor: a PUT until another client's watch event (scenario 8).

use std::time::{Duration, Instant};

use lockheed::Lock;
use lockheed::testing::Verb;

use crate::Mode;
use crate::floor::{Floors, IDLE};
use crate::report::{Counts, Table, figure, ms, num, percentile};
use crate::sides::Side;

const LEASE: Duration = Duration::from_secs(15);

struct Measured {
    samples: Vec<Duration>,
    requests: Counts,
}

/// Hands a lock back and forth between two processes, `rounds` times after `warmup`.
async fn handovers(side: &Side, warmup: usize, rounds: usize) -> Measured {
    let lock = |process: &str| {
        Lock::new("handover", side.locker(process))
            .with_holder(process)
            .with_duration(LEASE)
    };
    let locks = [lock("a"), lock("b")];
    let mut guard = locks[0].acquire().await.expect("first");
    let mut samples = Vec::with_capacity(rounds);
    let mut requests = Counts::default();
    for round in 0..warmup + rounds {
        let waiter = locks[(round + 1) % 2].clone();
        side.reset();
        let waiting = tokio::spawn(async move {
            let guard = waiter.acquire().await.expect("the waiter");
            (guard, Instant::now())
        });
        // Wait until the waiter has sent its one write (its place in the queue), then give
        // the write time to land and the holder's watch time to deliver it.
        let patience = Instant::now();
        while side.counts().get(Verb::Update.as_str()) == 0 {
            assert!(
                patience.elapsed() < Duration::from_secs(5),
                "the waiter never queued"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(IDLE).await;
        let started = Instant::now();
        guard.release().await.expect("release");
        let (next, taken_at) = waiting.await.expect("the waiter");
        if round >= warmup {
            samples.push(taken_at - started);
            requests.add(&side.counts());
        }
        guard = next;
    }
    guard.release().await.expect("release");
    Measured { samples, requests }
}

pub async fn run(mode: Mode, floors: &Floors) {
    let (warmup, rounds) = if mode.quick { (5, 60) } else { (20, 500) };
    let mut table = Table::new(
        "10. Handover on each server, against its own floor",
        &["measure", "fake", "real", "real ÷ fake"],
    );
    let mut measured = Vec::new();
    for side in Side::both().await {
        let floor = *floors.of(&side);
        let mut m = handovers(&side, warmup, rounds).await;
        let (p50, p99) = (
            percentile(&mut m.samples, 50.0),
            percentile(&mut m.samples, 99.0),
        );
        let max = *m.samples.iter().max().expect("samples");
        let key = format!("handover_vs_floor.{}", side.name());
        figure(&format!("{key}.p50_ms"), p50.as_secs_f64() * 1e3, "ms");
        figure(&format!("{key}.p99_ms"), p99.as_secs_f64() * 1e3, "ms");
        figure(
            &format!("{key}.p50_over_idle_floor_p50"),
            p50.as_secs_f64() / floor.idle_event_p50.as_secs_f64(),
            "x",
        );
        measured.push((p50, p99, max, m.requests, floor));
    }
    let (fake, real) = (&measured[0], &measured[1]);
    let secs = |d: Duration| d.as_secs_f64();
    let ratio = |f: Duration, r: Duration| num(secs(r) / secs(f));
    for (what, f, r) in [
        ("handover p50", fake.0, real.0),
        ("handover p99", fake.1, real.1),
        ("handover max", fake.2, real.2),
        (
            "floor p50: PUT → another client's watch event, after 20 ms idle",
            fake.4.idle_event_p50,
            real.4.idle_event_p50,
        ),
        (
            "floor p99, after 20 ms idle",
            fake.4.idle_event_p99,
            real.4.idle_event_p99,
        ),
        (
            "floor p50, PUTs back to back",
            fake.4.event_p50,
            real.4.event_p50,
        ),
        ("one PUT round trip, p50", fake.4.put_p50, real.4.put_p50),
    ] {
        table.row(vec![what.into(), ms(f), ms(r), ratio(f, r)]);
    }
    let over = |a: Duration, b: Duration| secs(a) / secs(b);
    for (what, f, r) in [
        (
            "handover p50 ÷ floor p50 (after idle)",
            over(fake.0, fake.4.idle_event_p50),
            over(real.0, real.4.idle_event_p50),
        ),
        (
            "handover p99 ÷ floor p99 (after idle)",
            over(fake.1, fake.4.idle_event_p99),
            over(real.1, real.4.idle_event_p99),
        ),
    ] {
        table.row(vec![what.into(), num(f), num(r), num(r / f)]);
    }
    table.row(vec![
        "requests per handover".into(),
        fake.3.per(rounds as u64),
        real.3.per(rounds as u64),
        "—".into(),
    ]);
    table.note(format!(
        "{rounds} handovers per server after {warmup} not counted, fair waiting (the \
         default). The waiter has queued (its one write, counted with the release's) and 20 ms \
         passed before the release starts; latency runs from the start of `release()` until \
         the waiter's `acquire()` returns. The floors are scenario 8's, measured in the same run; \
         the one to read a handover against is a PUT until another client's watch event \
         after the same 20 ms without requests, when the threads of both ends have gone to \
         sleep as they have before each release. Load average at the end: {}.",
        crate::sys::load_average()
    ));
    table.print();
}
