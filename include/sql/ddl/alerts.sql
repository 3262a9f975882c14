-- One row per alert condition (kind, subject, condition), written by shadowgate.pipelines.alerts.record_alerts: a
-- condition is sent when it begins to hold, counted (not sent again) while it holds, resolved on the first run on
-- which it no longer holds, and sent again only when it holds after that (a new episode).
-- * alert_key: a hash of (kind, subject, condition), stable across runs;
-- * first_raised_at / last_seen_at / resolved_at: as-of instants of the runs that opened the current episode, last
--   saw it hold, and first saw it gone (NULL while it holds);
-- * times_seen: runs it held in the current episode; times_raised: episodes so far (each one sent once);
-- * notified_at: when the current episode's alert was delivered (NULL: not yet, the next run retries);
-- * details: the figures of the latest run on which it held.
CREATE TABLE IF NOT EXISTS `${dataset}.alerts` (
  alert_key STRING NOT NULL,
  kind STRING NOT NULL,
  subject STRING NOT NULL,
  condition STRING NOT NULL,
  severity STRING NOT NULL,
  source STRING NOT NULL,
  title STRING NOT NULL,
  text STRING NOT NULL,
  first_raised_at TIMESTAMP NOT NULL,
  last_seen_at TIMESTAMP NOT NULL,
  resolved_at TIMESTAMP,
  times_seen INT64 NOT NULL,
  times_raised INT64 NOT NULL,
  notified_at TIMESTAMP,
  details JSON
)
CLUSTER BY kind, subject
