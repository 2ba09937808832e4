//! Runs the plan: every unit as its own task, all sharing the api's in-flight limit. A task
//! submits its request (a contested group submits all members in one burst), replays it
//! when the plan says so, then polls it until it is decided or its polling budget is spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::api::{Accepted, Answer, Api, Polled, Submission, Submitted};
use crate::plan::{Planned, Replay, Unit};

/// How a replay with the same `Idempotency-Key` went.
#[derive(Debug, Clone)]
pub struct ReplayCheck {
    /// POSTs the replay added.
    pub sent: usize,
    pub conflicting_body: bool,
    pub ok: bool,
    /// The replay was still refused 429 or 503 after its retries, so it proves nothing.
    pub inconclusive: bool,
    pub detail: String,
}

/// Everything that happened to one planned request.
#[derive(Debug)]
pub struct Outcome {
    pub planned: Planned,
    /// Index into the report's group list, for members of a contested group.
    pub group: Option<usize>,
    pub submitted: Result<Submitted, String>,
    pub replay: Option<ReplayCheck>,
    /// `None` when the request was not accepted.
    pub polled: Option<Result<Polled, String>>,
}

impl Outcome {
    pub fn accepted(&self) -> Option<&Accepted> {
        match &self.submitted {
            Ok(Submitted {
                answer: Answer::Accepted { accepted, .. },
                ..
            }) => Some(accepted),
            _ => None,
        }
    }
}

/// Counts for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub submitted: AtomicUsize,
    pub accepted: AtomicUsize,
    pub decided: AtomicUsize,
}

/// Runs every unit; the outcomes come back in no particular order. Contested groups are
/// numbered in plan order (`Outcome::group`).
pub async fn run(
    api: Arc<Api>,
    units: Vec<Unit>,
    poll_budget: Duration,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Outcome>> {
    let mut tasks = JoinSet::new();
    let mut group_index = 0;
    for unit in units {
        let api = api.clone();
        let progress = progress.clone();
        match unit {
            Unit::Single(planned) => {
                tasks.spawn(
                    async move { vec![single(&api, planned, poll_budget, &progress).await] },
                );
            }
            Unit::Group(group) => {
                let index = group_index;
                group_index += 1;
                tasks.spawn(async move {
                    contested(&api, group.members, index, poll_budget, &progress).await
                });
            }
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.extend(done?);
    }
    Ok(outcomes)
}

/// One request: submit, replay if planned, poll.
async fn single(
    api: &Api,
    planned: Planned,
    poll_budget: Duration,
    progress: &Progress,
) -> Outcome {
    let (submitted, mut replay) = if planned.replay == Replay::Concurrent {
        submit_twice_at_once(api, &planned.submission).await
    } else {
        (submit(api, &planned.submission, None).await, None)
    };
    progress.submitted.fetch_add(1, Ordering::Relaxed);
    let mut outcome = Outcome {
        planned,
        group: None,
        submitted,
        replay: None,
        polled: None,
    };
    if let Some(accepted) = outcome.accepted().cloned() {
        progress.accepted.fetch_add(1, Ordering::Relaxed);
        if replay.is_none() {
            replay = replay_after(api, &outcome.planned, accepted.request_id).await;
        }
        outcome.polled = Some(poll(api, &outcome, poll_budget, progress).await);
    }
    outcome.replay = replay;
    outcome
}

/// A contested group: every member leaves at once, then each is polled.
async fn contested(
    api: &Api,
    members: Vec<Planned>,
    group: usize,
    poll_budget: Duration,
    progress: &Progress,
) -> Vec<Outcome> {
    let mut burst = api.permits(members.len()).await.ok();
    let submissions = members.iter().map(|member| {
        let permit = burst.as_mut().and_then(|p| p.split(1));
        submit(api, &member.submission, permit)
    });
    let answers = join_all(submissions).await;
    drop(burst);
    let mut outcomes: Vec<Outcome> = members
        .into_iter()
        .zip(answers)
        .map(|(planned, submitted)| Outcome {
            planned,
            group: Some(group),
            submitted,
            replay: None,
            polled: None,
        })
        .collect();
    progress
        .submitted
        .fetch_add(outcomes.len(), Ordering::Relaxed);
    let polls = outcomes.iter().map(|outcome| async {
        outcome.accepted()?;
        progress.accepted.fetch_add(1, Ordering::Relaxed);
        Some(poll(api, outcome, poll_budget, progress).await)
    });
    let polled = join_all(polls).await;
    for (outcome, polled) in outcomes.iter_mut().zip(polled) {
        outcome.polled = polled;
    }
    outcomes
}

async fn submit(
    api: &Api,
    submission: &Submission,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Submitted, String> {
    api.submit(submission, permit)
        .await
        .map_err(|err| format!("{err:#}"))
}

/// The same request twice at the same moment: both must name the same request.
async fn submit_twice_at_once(
    api: &Api,
    submission: &Submission,
) -> (Result<Submitted, String>, Option<ReplayCheck>) {
    let mut pair = api.permits(2).await.ok();
    let second_permit = pair.as_mut().and_then(|p| p.split(1));
    let (first, second) = tokio::join!(
        submit(api, submission, pair),
        submit(api, submission, second_permit)
    );
    let check = compare_ids(&first, &second, "sent twice at once");
    (first, Some(check))
}

/// After the 202: the same key again, with the same body (same request id expected) or a
/// different one (422 expected).
async fn replay_after(api: &Api, planned: &Planned, request_id: Uuid) -> Option<ReplayCheck> {
    match &planned.replay {
        Replay::None | Replay::Concurrent => None,
        Replay::Retry => {
            let again = submit(api, &planned.submission, None).await;
            let check = match &again {
                Ok(Submitted {
                    answer: Answer::Accepted { accepted, .. },
                    ..
                }) if accepted.request_id == request_id => ReplayCheck {
                    sent: 1,
                    conflicting_body: false,
                    ok: true,
                    inconclusive: false,
                    detail: String::new(),
                },
                other => ReplayCheck {
                    sent: 1,
                    conflicting_body: false,
                    ok: false,
                    inconclusive: turned_away(other),
                    detail: format!("retry of {request_id} answered {}", describe(other)),
                },
            };
            Some(check)
        }
        Replay::ConflictingBody(body) => {
            let other = Submission {
                body: body.clone(),
                ..planned.submission.clone()
            };
            let answer = submit(api, &other, None).await;
            let ok = matches!(
                &answer,
                Ok(Submitted {
                    answer: Answer::Refused { status: 422, .. },
                    ..
                })
            );
            Some(ReplayCheck {
                sent: 1,
                conflicting_body: true,
                ok,
                inconclusive: !ok && turned_away(&answer),
                detail: format!(
                    "same key as {request_id} with another body answered {}",
                    describe(&answer)
                ),
            })
        }
    }
}

fn compare_ids(
    first: &Result<Submitted, String>,
    second: &Result<Submitted, String>,
    what: &str,
) -> ReplayCheck {
    let id = |r: &Result<Submitted, String>| match r {
        Ok(Submitted {
            answer: Answer::Accepted { accepted, .. },
            ..
        }) => Some(accepted.request_id),
        _ => None,
    };
    let ok = id(first).is_some() && id(first) == id(second);
    ReplayCheck {
        sent: 1,
        conflicting_body: false,
        ok,
        inconclusive: !ok && (turned_away(first) || turned_away(second)),
        detail: format!("{what}: {} and {}", describe(first), describe(second)),
    }
}

/// Refused 429 or 503: the api asked to come back later, and the retries ran out.
fn turned_away(answer: &Result<Submitted, String>) -> bool {
    matches!(
        answer,
        Ok(Submitted {
            answer: Answer::Refused {
                status: 429 | 503,
                ..
            },
            ..
        })
    )
}

fn describe(answer: &Result<Submitted, String>) -> String {
    match answer {
        Ok(Submitted {
            answer: Answer::Accepted { accepted, .. },
            ..
        }) => format!("202 {}", accepted.request_id),
        Ok(Submitted {
            answer: Answer::Refused { status, body, .. },
            ..
        }) => format!("{status} {body}"),
        Err(err) => format!("error: {err}"),
    }
}

async fn poll(
    api: &Api,
    outcome: &Outcome,
    budget: Duration,
    progress: &Progress,
) -> Result<Polled, String> {
    let Ok(Submitted {
        answer: Answer::Accepted { accepted, at, .. },
        ..
    }) = &outcome.submitted
    else {
        return Err("not accepted".to_owned());
    };
    let result = api
        .await_decision(accepted, *at, Instant::now() + budget)
        .await
        .map_err(|err| format!("{err:#}"));
    if matches!(result, Ok(Polled::Final { .. })) {
        progress.decided.fetch_add(1, Ordering::Relaxed);
    }
    result
}
