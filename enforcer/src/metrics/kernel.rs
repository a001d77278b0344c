//! What the kernel accepted: which optional features are available and what the verifier spent
//! on each program (`enforcer_feature_available`, `enforcer_program_verified_instructions`,
//! `enforcer_program_load_seconds`).
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::kernel::{Feature, verifier::LoadReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub feature: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: &'static str,
}

pub struct KernelMetrics {
    pub feature_available: Family<FeatureLabels, Gauge>,
    pub program_instructions: Family<ProgramLabels, Gauge>,
    pub program_load_seconds: Family<ProgramLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl KernelMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let feature_available = Family::<FeatureLabels, Gauge>::default();
        registry.register(
            "feature_available",
            "1 when an optional feature's programs loaded on this kernel (dns_learning: FQDN \
             rules without a race; identity: scope mode's kernel-held targets), 0 when it is lost",
            feature_available.clone(),
        );
        let program_instructions = Family::<ProgramLabels, Gauge>::default();
        registry.register(
            "program_verified_instructions",
            "Instructions the kernel's verifier processed for each program at load (limit \
             1,000,000; the project's budget 100,000)",
            program_instructions.clone(),
        );
        let program_load_seconds = Family::default();
        registry.register(
            "program_load_seconds",
            "Wall time of each program's load (verification and JIT)",
            program_load_seconds.clone(),
        );
        Self {
            feature_available,
            program_instructions,
            program_load_seconds,
        }
    }

    /// Records the features and the load report of a freshly loaded object.
    pub fn observe(&self, features: &[(Feature, bool)], report: &LoadReport) {
        for &(feature, available) in features {
            self.feature_available
                .get_or_create(&FeatureLabels {
                    feature: feature.as_str(),
                })
                .set(i64::from(available));
        }
        for p in &report.programs {
            let labels = ProgramLabels { program: p.program };
            if let Some(n) = p.instructions {
                self.program_instructions
                    .get_or_create(&labels)
                    .set(i64::from(n));
            }
            self.program_load_seconds
                .get_or_create(&labels)
                .set(p.time.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kernel::verifier::ProgramLoad;

    #[test]
    fn a_lost_feature_is_exported_as_zero_and_counts_per_program() {
        let mut registry = Registry::with_prefix("enforcer");
        let m = KernelMetrics::register(&mut registry);
        let report = LoadReport {
            programs: vec![
                ProgramLoad {
                    program: "enforcer_connect4",
                    instructions: Some(8801),
                    time: Duration::from_millis(60),
                    error: None,
                },
                ProgramLoad {
                    program: "enforcer_dns_ingress",
                    instructions: None,
                    time: Duration::from_secs(14),
                    error: Some("BPF program is too large".to_owned()),
                },
            ],
        };
        m.observe(
            &[(Feature::DnsLearning, false), (Feature::Identity, true)],
            &report,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "enforcer_feature_available{feature=\"dns_learning\"} 0",
            "enforcer_feature_available{feature=\"identity\"} 1",
            "enforcer_program_verified_instructions{program=\"enforcer_connect4\"} 8801",
            "enforcer_program_load_seconds{program=\"enforcer_dns_ingress\"} 14.0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains(
                "enforcer_program_verified_instructions{program=\"enforcer_dns_ingress\"}"
            ),
            "{text}"
        );
    }
}
