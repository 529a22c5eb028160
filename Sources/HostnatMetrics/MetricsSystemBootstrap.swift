internal import CoreMetrics
internal import Prometheus

extension TelemetryRegistry {
  /// Routes swift-metrics (`Counter(label:)`, `Timer`, … used by libraries) into this registry.
  /// swift-metrics allows one bootstrap per process: call it once, at startup.
  public func bootstrapMetricsSystem() {
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: prometheus))
  }
}
