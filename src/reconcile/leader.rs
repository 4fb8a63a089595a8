//! Leader election among `stash serve` replicas through the
//! coordination.k8s.io/v1 Lease `stash-reconciler` in the server's namespace.
//!
//! Every replica serves webhooks; only the Lease holder reconciles. The Lease
//! is run by kube-lease-manager. Its watch channel reports a lost Lease only
//! once it has *seen* another holder, which a replica cut off from the API
//! server never does — so a watchdog also reads the Lease and stops the
//! reconciler as soon as the last renewal it can confirm is about to expire
//! (a margin before another replica may take over), whatever the channel says.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

/// Name of the Lease.
pub const LEASE_NAME: &str = "stash-reconciler";
/// Seconds a renewal is valid for.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
pub const LEASE_GRACE_SECONDS: u64 = 5;
/// The reconciler stops this long before the confirmed Lease expires.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);
/// How often the holder re-reads the Lease.
pub const WATCHDOG_PERIOD: Duration = Duration::from_secs(2);
/// Longest wait for one read of the Lease.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before competing again after an error or a loss.
const RETRY: Duration = Duration::from_secs(5);

/// What the watchdog concludes from one read of the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still ours: reconciling may go on until this instant.
    HoldUntil(jiff::Timestamp),
    /// Someone else holds it, or our last confirmed renewal is about to run out.
    Lost,
}

/// Judges one read of the Lease (`None` when the read failed) against the
/// deadline confirmed so far.
pub fn verdict(
    lease: Option<&Lease>,
    identity: &str,
    confirmed_until: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Verdict {
    let mut until = confirmed_until;
    if let Some(spec) = lease.and_then(|l| l.spec.as_ref()) {
        if spec.holder_identity.as_deref() != Some(identity) {
            return Verdict::Lost;
        }
        if let Some(renewed) = spec.renew_time.as_ref() {
            let secs = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION_SECONDS as i64, i64::from);
            let valid = renewed.0 + jiff::SignedDuration::from_secs(secs);
            let margin = jiff::SignedDuration::try_from(STOP_MARGIN).unwrap_or_default();
            until = valid - margin;
        }
    }
    if now >= until {
        Verdict::Lost
    } else {
        Verdict::HoldUntil(until)
    }
}

/// How long to sleep before the next look: the watchdog period, or less if
/// the confirmed deadline comes sooner.
pub fn next_check(confirmed_until: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let left = Duration::try_from(confirmed_until.duration_since(now)).unwrap_or(Duration::ZERO);
    left.min(WATCHDOG_PERIOD)
}

/// Competes for the Lease forever; while holding it, runs `work()` and aborts
/// it on loss. Returns only if the work returns while leading (it should not).
pub async fn run_while_leader<F, Fut>(
    client: Client,
    namespace: &str,
    identity: &str,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    loop {
        let manager = match LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, lease = LEASE_NAME, %namespace, "cannot set up leader election; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let (mut leading, task) = manager.watch().await;
        // Wait to become the holder.
        let became_leader = loop {
            if *leading.borrow_and_update() {
                break true;
            }
            if leading.changed().await.is_err() {
                break false;
            }
        };
        if !became_leader {
            tracing::warn!("leader election stopped; restarting it");
            let _ = tokio::time::timeout(RETRY, task).await;
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tracing::info!(%identity, lease = LEASE_NAME, "acquired the Lease: reconciling");
        let mut worker = tokio::spawn(work());
        let mut confirmed_until = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs(LEASE_DURATION_SECONDS as i64)
            - jiff::SignedDuration::try_from(STOP_MARGIN).unwrap_or_default();
        let reason = loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break "the Lease was lost";
                    }
                }
                _ = tokio::time::sleep(next_check(confirmed_until, jiff::Timestamp::now())) => {
                    // Bounded, so a hung read cannot carry us past the deadline.
                    let lease = match tokio::time::timeout(READ_TIMEOUT, leases.get_opt(LEASE_NAME)).await {
                        Ok(Ok(l)) => l,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot read the Lease");
                            None
                        }
                        Err(_) => {
                            tracing::warn!("reading the Lease timed out");
                            None
                        }
                    };
                    match verdict(lease.as_ref(), identity, confirmed_until, jiff::Timestamp::now()) {
                        Verdict::HoldUntil(t) => confirmed_until = t,
                        Verdict::Lost => break "the Lease renewal could not be confirmed in time",
                    }
                }
                res = &mut worker => {
                    if let Err(e) = res {
                        tracing::error!(error = %e, "the reconciler task ended");
                    }
                    break "the reconciler stopped";
                }
            }
        };
        worker.abort();
        let _ = worker.await;
        tracing::warn!(%identity, %reason, "stopped reconciling");
        // Closing the channel makes the manager release the Lease and end.
        drop(leading);
        let _ = tokio::time::timeout(RETRY, task).await;
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn lease(holder: &str, renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(ts(renewed))),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        // renewed at 100, valid to 115, stop at 112
        assert_eq!(
            verdict(Some(&lease("me", 100)), "me", ts(0), ts(105)),
            Verdict::HoldUntil(ts(112))
        );
        assert_eq!(
            verdict(Some(&lease("me", 100)), "me", ts(0), ts(112)),
            Verdict::Lost
        );
        assert_eq!(
            verdict(Some(&lease("other", 100)), "me", ts(200), ts(105)),
            Verdict::Lost
        );
        // the read failed: the deadline confirmed earlier still holds, then runs out
        assert_eq!(
            verdict(None, "me", ts(112), ts(110)),
            Verdict::HoldUntil(ts(112))
        );
        assert_eq!(verdict(None, "me", ts(112), ts(112)), Verdict::Lost);
    }

    #[test]
    fn checks_come_no_later_than_the_deadline() {
        assert_eq!(next_check(ts(110), ts(100)), WATCHDOG_PERIOD);
        assert_eq!(next_check(ts(110), ts(109)), Duration::from_secs(1));
        assert_eq!(next_check(ts(110), ts(111)), Duration::ZERO);
    }

    #[test]
    fn the_reconciler_stops_before_another_replica_may_take_over() {
        // The holder renews `grace` seconds before expiry; the watchdog must
        // not fire in normal operation, and must fire before expiry otherwise.
        assert!(STOP_MARGIN < Duration::from_secs(LEASE_GRACE_SECONDS));
        assert!(STOP_MARGIN > READ_TIMEOUT);
    }
}
