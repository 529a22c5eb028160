public import Prometheus
internal import Synchronization

/// A counter fed with totals: the data plane keeps its own monotonic counters, so each update sets
/// the new total and the Prometheus counter advances by the difference. A total lower than the
/// last one means the source restarted; the counter is reset to it (Prometheus reads that as a
/// counter reset, which `rate()` handles). swift-prometheus's `Counter` has no `set`, hence this.
public final class TotalCounter: Sendable {
  let counter: Prometheus.Counter
  let last: Mutex<UInt64> = Mutex(0)

  init(_ counter: Prometheus.Counter) { self.counter = counter }

  /// Sets the total; returns by how much it grew (0 after a reset).
  @discardableResult
  public func set(_ total: UInt64) -> UInt64 {
    last.withLock { last in
      defer { last = total }
      if total >= last {
        let delta = total - last
        if delta > 0 { counter.increment(by: Int64(clamping: delta)) }
        return delta
      }
      counter.reset()
      counter.increment(by: Int64(clamping: total))
      return 0
    }
  }

  /// For event counters (admin requests, pushes) counted where they happen.
  public func increment(by amount: UInt64 = 1) {
    last.withLock { last in
      last &+= amount
      counter.increment(by: Int64(clamping: amount))
    }
  }

  public var value: UInt64 { last.withLock { $0 } }
}

/// A gauge of the registry (callers need not import Prometheus).
public struct TelemetryGauge: Sendable {
  let gauge: Prometheus.Gauge
  public func set(_ value: Double) { gauge.set(value) }
  public func set(_ value: Int) { gauge.set(Int64(value)) }
  public func set(_ value: UInt64) { gauge.set(Int64(clamping: value)) }
  public func set(_ value: Bool) { gauge.set(Int64(value ? 1 : 0)) }
}

/// A histogram of the registry, in the unit its name says (seconds for `_seconds`).
public struct TelemetryHistogram: Sendable {
  let histogram: ValueHistogram
  public func record(_ value: Double) { histogram.record(value) }
  public func record(_ duration: Duration) {
    let c = duration.components
    histogram.record(Double(c.seconds) + Double(c.attoseconds) / 1e18)
  }
}

/// hostnat's metrics: a swift-prometheus registry plus the catalog of `MetricCatalog`, which
/// gives every known name its kind, help text and label names. Asking for a known name with
/// another kind or other label names is a programming error and traps with the reason
/// (swift-prometheus would trap anyway on a kind clash or labeled/unlabeled mix). Unknown names
/// are allowed, with no help text.
public final class TelemetryRegistry: Sendable {
  public let prometheus: PrometheusCollectorRegistry
  let definitions: [String: MetricDefinition]

  struct Key: Hashable {
    var name: String
    var labels: [String]
  }
  let totals: Mutex<[Key: TotalCounter]> = Mutex([:])

  public init(definitions: [MetricDefinition] = MetricCatalog.all, prometheus: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
    self.prometheus = prometheus
    self.definitions = Dictionary(definitions.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
  }

  func descriptor(_ name: String, _ kind: MetricKind, _ labels: [(String, String)]) -> (MetricNameDescriptor, MetricDefinition?) {
    let def = definitions[name]
    if let def {
      precondition(def.kind == kind, "metric \(name) is a \(def.kind.rawValue), not a \(kind.rawValue)")
      precondition(def.labels == labels.map(\.0), "metric \(name) takes labels \(def.labels), got \(labels.map(\.0))")
    }
    return (MetricNameDescriptor(metricName: name, unitName: "", helpText: def?.help ?? ""), def)
  }

  /// The counter `name{labels}`, created on first use; feed it with `set(total)` or `increment`.
  public func counter(_ name: String, labels: [(String, String)] = []) -> TotalCounter {
    let key = Key(name: name, labels: labels.flatMap { [$0.0, $0.1] })
    if let c = totals.withLock({ $0[key] }) { return c }
    let (d, _) = descriptor(name, .counter, labels)
    let made = TotalCounter(prometheus.makeCounter(descriptor: d, labels: labels))
    return totals.withLock { t in
      if let c = t[key] { return c }
      t[key] = made
      return made
    }
  }

  /// The gauge `name{labels}`, created on first use.
  public func gauge(_ name: String, labels: [(String, String)] = []) -> TelemetryGauge {
    let (d, _) = descriptor(name, .gauge, labels)
    return TelemetryGauge(gauge: prometheus.makeGauge(descriptor: d, labels: labels))
  }

  /// The histogram `name{labels}` with the catalog's buckets (or `buckets` for unknown names).
  public func histogram(_ name: String, labels: [(String, String)] = [], buckets: [Double] = [0.001, 0.01, 0.1, 1, 10]) -> TelemetryHistogram {
    let (d, def) = descriptor(name, .histogram, labels)
    return TelemetryHistogram(histogram: prometheus.makeValueHistogram(descriptor: d, labels: labels, buckets: def?.buckets ?? buckets))
  }

  /// The Prometheus text exposition of every metric.
  public func render() -> String { prometheus.emitToString() }
  public func renderBytes() -> [UInt8] { prometheus.emitToBuffer() }
}
