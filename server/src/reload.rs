//! What both services share when they reload their configuration file: the answer of a reload
//! that took effect, the settings it had to keep because only a restart can change them, and
//! the metrics that count reloads.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a reload that took effect did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections that changed (`routes`, `tls`, `clients`, `signing_keys`, ...).
    pub changed: Vec<&'static str>,
    /// Keys whose new value needs a restart; their running value was kept.
    pub needs_restart: Vec<String>,
}

/// The settings a reload put back to their running value, each as its key and that value as
/// the log shows it. Each is logged once: `reload: server.listen needs a restart, kept ...`.
#[derive(Debug, Default)]
pub struct Kept(Vec<(String, String)>);

impl Kept {
    /// Puts `current` back into `new` when they differ, naming `key`; `show` writes the running
    /// value for the log (a value that may hold a secret shows something else).
    pub fn keep<T: PartialEq + Clone>(
        &mut self,
        key: &str,
        current: &T,
        new: &mut T,
        show: impl Fn(&T) -> String,
    ) {
        if new != current {
            self.0.push((key.to_owned(), show(current)));
            *new = current.clone();
        }
    }

    /// [`Kept::keep`] showing the running value with `Debug`.
    pub fn keep_shown<T: PartialEq + Clone + std::fmt::Debug>(
        &mut self,
        key: &str,
        current: &T,
        new: &mut T,
    ) {
        self.keep(key, current, new, |v| format!("{v:?}"));
    }

    /// Notes a setting kept by hand (one that is more than a single value).
    pub fn push(&mut self, key: &str, running: String) {
        self.0.push((key.to_owned(), running));
    }

    /// Each kept setting as its key and running value.
    pub fn entries(&self) -> &[(String, String)] {
        &self.0
    }

    /// Logs every kept setting and answers their keys, for [`Reloaded::needs_restart`].
    pub fn log(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(key, value)| {
                tracing::warn!("reload: {key} needs a restart, kept {value}");
                key
            })
            .collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `tokengate_config_reloads_total{result}` and
/// `tokengate_config_last_reload_success_timestamp_seconds`, the same on both services.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    ok: Counter,
    error: Counter,
    /// Unix time of the last (re)load that took effect: the start, then each good reload.
    last_success: Gauge<f64, AtomicU64>,
}

impl ReloadMetrics {
    /// The metrics, registered in `registry` (whose prefix should be `tokengate`); the start
    /// counts as the first load that took effect.
    pub fn register(registry: &mut Registry) -> Self {
        let reloads = Family::<ResultLabels, Counter>::default();
        let metrics = ReloadMetrics {
            ok: reloads.get_or_create_owned(&ResultLabels { result: "ok" }),
            error: reloads.get_or_create_owned(&ResultLabels { result: "error" }),
            last_success: Gauge::default(),
        };
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (ok: took effect; error: refused, nothing changed)",
            reloads,
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration (re)load that took effect",
            metrics.last_success.clone(),
        );
        metrics.stamp();
        metrics
    }

    /// A reload: counted by result; one that took effect is timestamped.
    pub fn record(&self, ok: bool) {
        if ok {
            self.ok.inc();
            self.stamp();
        } else {
            self.error.inc();
        }
    }

    fn stamp(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_setting_is_put_back_and_named() {
        let mut kept = Kept::default();
        let mut new = 2;
        kept.keep_shown("a.b", &1, &mut new);
        let mut same = 5;
        kept.keep_shown("a.c", &5, &mut same);
        assert_eq!(new, 1);
        assert_eq!(kept.entries(), &[("a.b".to_owned(), "1".to_owned())]);
        assert_eq!(kept.log(), vec!["a.b".to_owned()]);
    }
}
