//! Policy: maintenance windows, rollout bucketing, channels, holds, urgency rules.
