//! The mockall mocks behind `test-support` drive the ports like real adapters would.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::sync::Arc;

use echelon_domain::chat::{ChatRequest, ChatResponse, Message, Role};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::{Event, MockEventSink, SkipReason};
use echelon_domain::name::{InstanceId, ModelRef};
use echelon_domain::plan::{Outcome, RequestFacts, Step, Verdict};
use echelon_domain::ports::{
    ChatBackend, DynChatBackend, MockChatScript, MockSharedCounters, Scripted, SharedCounters,
};
use echelon_domain::random::{MockRandom, Random};
use echelon_domain::routing::{RoutingTable, TableOptions};
use echelon_domain::spec::{FallbackStrategy, Limits};
use echelon_domain::time::{Clock, Instant, MockClock};

use crate::support::Builder;

/// Polls a future that is ready at once (the mocks' futures are).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("mock future was not ready"),
    }
}

fn answer(model: &str) -> ChatResponse {
    ChatResponse {
        id: None,
        model: model.into(),
        message: Message::text(Role::Assistant, "hi"),
        finish_reason: None,
        usage: None,
    }
}

#[test]
fn a_scripted_backend_serves_a_plan_through_the_object_safe_port() {
    let w = Builder::new()
        .provider("a", 2)
        .model("a/m", None, Limits::default())
        .group("g", FallbackStrategy::EchelonDown, &[&["a/m"]])
        .build();
    let mut script = MockChatScript::new();
    script
        .expect_complete()
        .withf(|i, model, _| i.key_index == 0 && model == "m-upstream")
        .returning(|_, _, _| {
            Box::pin(async { Err(UpstreamError::new(ErrorClass::Server, "boom").with_status(500)) })
        });
    script
        .expect_complete()
        .withf(|i, _, _| i.key_index == 1)
        .times(1)
        .returning(|_, model, _| Box::pin(async move { Ok(answer(&model)) }));
    let backend: Arc<dyn DynChatBackend> = Arc::new(Scripted(script));
    let request = ChatRequest::new(vec![Message::text(Role::User, "hello")]);
    let mut plan = w.plan("group:g");
    let verdict = loop {
        match plan.next(w.now(), &w.rng) {
            Step::Attempt(a) => {
                let outcome = match ready(backend.complete_boxed(a.call(&request))) {
                    Ok(_) => Outcome::Success {
                        latency: Duration::from_millis(5),
                        ttft: None,
                        usage: None,
                    },
                    Err(error) => Outcome::Failure {
                        error,
                        latency: Duration::from_millis(5),
                    },
                };
                plan.record(a, outcome, w.now(), &w.rng);
            }
            Step::Wait { until, .. } => w.clock.set(until),
            Step::Done(v) => break v,
        }
    };
    assert_eq!(verdict, Verdict::Served);
    assert_eq!(plan.attempts().len(), 2);
    let mut probe = MockChatScript::new();
    probe
        .expect_probe()
        .returning(|_| Box::pin(async { Ok(()) }));
    let id = InstanceId::new(ModelRef::new("a", "m"), 0);
    assert!(ready(Scripted(probe).probe(&id)).is_ok());
}

#[test]
fn clock_random_sink_and_counters_mocks() {
    let mut clock = MockClock::new();
    clock
        .expect_now()
        .return_const(Instant::from_elapsed(Duration::from_secs(9)));
    assert_eq!(clock.now(), Instant::from_elapsed(Duration::from_secs(9)));

    let mut rng = MockRandom::new();
    rng.expect_next_u64().return_const(u64::MAX);
    assert_eq!(rng.below(10), 9);

    let mut counters = MockSharedCounters::new();
    counters
        .expect_add()
        .withf(|key, amount, window| {
            key == "rpm:a/m#0" && *amount == 1 && *window == Duration::from_secs(60)
        })
        .returning(|_, _, _| Box::pin(async { Ok(11) }));
    assert_eq!(
        ready(counters.add("rpm:a/m#0", 1, Duration::from_secs(60))),
        Ok(11)
    );

    // The sink sees the skip of a dead key while the plan answers 503.
    let mut sink = MockEventSink::new();
    sink.expect_record()
        .withf(|e| {
            matches!(
                e,
                Event::Skipped {
                    reason: SkipReason::Instance(_),
                    ..
                }
            )
        })
        .times(1)
        .return_const(());
    sink.expect_record().return_const(());
    let b = Builder::new()
        .provider("a", 1)
        .model("a/m", None, Limits::default());
    let table = RoutingTable::build(
        Arc::new(b.topology),
        None,
        TableOptions {
            sink: Arc::new(sink),
            ..TableOptions::default()
        },
        Instant::ZERO,
    );
    let id = InstanceId::new(ModelRef::new("a", "m"), 0);
    table.instance(&id).unwrap().mark_key_dead(table.sink());
    let route = table.resolve("a/m").unwrap();
    let mut plan = table.plan(
        &route,
        RequestFacts {
            estimated_tokens: 1,
            now: Instant::ZERO,
            deadline: None,
        },
    );
    let fixed = echelon_domain::random::SplitMix64::new(0);
    assert!(matches!(
        plan.next(Instant::ZERO, &fixed),
        Step::Done(Verdict::Unavailable { .. })
    ));
}
