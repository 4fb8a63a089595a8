//! Cron schedule validation as the CronJob controller accepts it.
