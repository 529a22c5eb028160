import Foundation
import GRPCCore
import HostnatMetrics
import GRPCNIOTransportHTTP2
import HostnatAddressing
import HostnatDesiredState
import HostnatProto
import HostnatTrace
public import Logging
import ServiceLifecycle
import UnixSignals

/// Why the controller process could not start. Each case is a sentence an operator can act on.
public enum ControllerStartError: Error, CustomStringConvertible, Equatable {
  /// A command-line value was malformed; names the option.
  case badOption(option: String, reason: String)
  /// The database could not be used (corrupt, too new, unreadable).
  case store(String)
  /// The stored intent could not be planned again (should not happen with an intact database).
  case restore(String)
  /// The listening socket could not be bound.
  case listen(address: String, reason: String)

  public var description: String {
    switch self {
    case .badOption(let option, let reason): "\(option): \(reason)"
    case .store(let message): message
    case .restore(let message): "cannot restore the controller state: \(message)"
    case .listen(let address, let reason): "cannot listen on \(address): \(reason)"
    }
  }
}

/// Settings of the controller process (`hostnat controller`).
public struct ControllerOptions: Sendable, Equatable {
  /// Directory of the SQLite database (created if missing).
  public var dataDirectory: String
  /// IPv4 address to listen on.
  public var host: String
  /// TCP port; 0 picks a free one (the ready line names it).
  public var port: Int
  /// Region → IPs that AUTO_ONLY gateways take, in order.
  public var autoPools: [String: [String]]
  /// Control-stream heartbeat interval.
  public var heartbeat: Duration
  /// How often ownership leases of silent hosts are checked.
  public var leaseCheckInterval: Duration
  /// Where to serve Prometheus metrics (`/metrics`, `/healthz`): host and port (0: any); nil: not served.
  public var metrics: (host: String, port: Int)?
  /// File to append every control message to as a JSON line (`--trace-control`); nil: none.
  public var traceControl: String?
  /// Fencing mode and lease (control.proto rule 8; `--fencing`, `--lease-sec`, `--fence-margin-sec`).
  public var fencing = FencingPolicy()

  public static func == (a: ControllerOptions, b: ControllerOptions) -> Bool {
    a.dataDirectory == b.dataDirectory && a.host == b.host && a.port == b.port && a.autoPools == b.autoPools
      && a.heartbeat == b.heartbeat && a.leaseCheckInterval == b.leaseCheckInterval
      && a.metrics?.host == b.metrics?.host && a.metrics?.port == b.metrics?.port && a.traceControl == b.traceControl && a.fencing == b.fencing
  }

  public init(
    dataDirectory: String, host: String = "127.0.0.1", port: Int = 7400,
    autoPools: [String: [String]] = ControllerOptions.defaultAutoPools,
    heartbeat: Duration = .seconds(1), leaseCheckInterval: Duration = .seconds(5)
  ) {
    self.dataDirectory = dataDirectory
    self.host = host
    self.port = port
    self.autoPools = autoPools
    self.heartbeat = heartbeat
    self.leaseCheckInterval = leaseCheckInterval
  }

  /// us-central1 and us-east1 share 198.51.100.0/24, split in halves so that no IP can ever be
  /// auto-allocated in both regions. Reserved addresses come from 203.0.113.0/24 instead.
  public static let defaultAutoPools: [String: [String]] = [
    "us-central1": poolAddresses(IPv4CIDR("198.51.100.0/25")!),
    "us-east1": poolAddresses(IPv4CIDR("198.51.100.128/25")!),
  ]

  /// Parses a listener's "HOST:PORT" (IPv4 or localhost, port 0...65535: 0 lets the kernel choose).
  public static func parseListen(_ value: String, flag: String = "--listen") throws(ControllerStartError) -> (host: String, port: Int) {
    do {
      let address = try SocketAddress.parse(value, flag: flag, allowPortZero: true)
      return (address.host, Int(address.port))
    } catch {
      throw .badOption(option: error.field, reason: error.reason)
    }
  }

  /// Parses repeated "REGION=CIDR" values. Pools must lie in 192.0.2.0/24 or 198.51.100.0/24
  /// (documentation ranges; 203.0.113.0/24 is where reserved addresses come from) and must not
  /// overlap between regions.
  public static func parseAutoPools(_ values: [String]) throws(ControllerStartError) -> [String: [String]] {
    let documentation = ["192.0.2.0/24", "198.51.100.0/24"].compactMap { IPv4CIDR($0) }
    var pools: [String: [IPv4CIDR]] = [:]
    for value in values {
      let parts = value.split(separator: "=", maxSplits: 1)
      guard parts.count == 2, !parts[0].isEmpty, let cidr = IPv4CIDR(String(parts[1])) else {
        throw .badOption(option: "--auto-nat-pool", reason: "\"\(value)\" is not REGION=CIDR (e.g. us-east1=198.51.100.128/25)")
      }
      guard documentation.contains(where: { $0.contains(cidr.first) && $0.contains(cidr.last) }) else {
        throw .badOption(option: "--auto-nat-pool", reason: "\(cidr) is outside 192.0.2.0/24 and 198.51.100.0/24 (203.0.113.0/24 is for reserved addresses)")
      }
      if let serverless = IPv4CIDR(ServerlessModel.egressRange), serverless.overlaps(cidr) {
        throw .badOption(option: "--auto-nat-pool", reason: "\(cidr) overlaps \(serverless), where serverless egress IPs come from")
      }
      for (region, others) in pools {
        for other in others where other.overlaps(cidr) {
          throw .badOption(option: "--auto-nat-pool", reason: "\(cidr) overlaps \(other) of \(region)")
        }
      }
      pools[String(parts[0]), default: []].append(cidr)
    }
    return pools.mapValues { $0.flatMap(poolAddresses) }
  }

  /// The usable IPs of a pool range: every address except those ending in .0 or .255, which
  /// some stacks still treat as network or broadcast addresses.
  static func poolAddresses(_ cidr: IPv4CIDR) -> [String] {
    (cidr.first.value...cidr.last.value).compactMap { value in
      let last = value & 0xFF
      return last == 0 || last == 255 ? nil : "\(IPv4Address(value))"
    }
  }
}

/// The controller process: the store, the control services for agents and the edge, the core
/// and the admin API, served over HTTP/2 (plaintext) and run under a ServiceGroup that shuts
/// down gracefully on SIGTERM/SIGINT: control streams are ended, in-flight admin calls finish,
/// then the process returns.
public struct ControllerServer: Sendable {
  public let options: ControllerOptions
  public let logger: Logger

  public init(options: ControllerOptions, logger: Logger) {
    self.options = options
    self.logger = logger
  }

  /// Runs until SIGTERM/SIGINT (with `handleSignals`) or cancellation. `onReady` is called
  /// once the socket is bound, with the bound host and port.
  public func run(
    handleSignals: Bool = true,
    onReady: @escaping @Sendable (_ host: String, _ port: Int) -> Void
  ) async throws {
    let store: ControllerStore
    do {
      store = try ControllerStore(directory: options.dataDirectory)
    } catch {
      throw ControllerStartError.store(error.description)
    }
    var trace: ControlTrace?
    if let path = options.traceControl {
      do {
        trace = try ControlTrace(path: path, side: "controller", selfName: "\(options.host):\(options.port)")
      } catch {
        throw ControllerStartError.badOption(option: "--trace-control", reason: error.description)
      }
    }
    // The core first: it pushes to the sessions and the services tell it what hosts say.
    let sessions = ControlSessions()
    let core: ControllerCore
    do {
      core = try ControllerCore(store: store, sessions: sessions, autoPools: options.autoPools, fencing: options.fencing, logger: logger)
    } catch {
      throw ControllerStartError.restore("\(error)")
    }
    var hostService = HostControlService(store: store, registry: sessions.hosts, heartbeatInterval: options.heartbeat, events: core)
    var edgeService = EdgeControlService(
      store: store, registry: sessions.edges, heartbeatInterval: options.heartbeat,
      prepare: { hello in try await core.helloReceived(hello, kind: .edge) })
    hostService.trace = trace
    edgeService.trace = trace
    let registry = TelemetryRegistry()
    let admin = AdminService(core: core) { method, result in
      registry.counter("hostnat_controller_admin_requests_total", labels: [("method", method), ("result", result)]).increment()
    }

    let address = "\(options.host):\(options.port)"
    let server = GRPCServer(
      transport: .http2NIOPosix(address: .ipv4(host: options.host, port: options.port), transportSecurity: .plaintext),
      services: [hostService, edgeService, admin])

    let serving = GRPCService(server: server, address: address, onReady: onReady) {
      // Control streams never end on their own: close them so the server can drain.
      sessions.shutdown()
    }
    let background = CoreService(core: core, leaseCheckInterval: options.leaseCheckInterval)
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: background), .init(service: serving)]
    if let metrics = options.metrics {
      services.append(.init(service: ControllerMetricsService(
        registry: registry, sessions: sessions, core: core, host: metrics.host, port: metrics.port, logger: logger)))
    }
    let group = ServiceGroup(
      configuration: .init(
        services: services,
        gracefulShutdownSignals: handleSignals ? [UnixSignal.sigterm, .sigint] : [],
        logger: logger))
    logger.info("controller starting", metadata: ["data-dir": "\(options.dataDirectory)", "listen": "\(address)"])
    try await group.run()
    logger.info("controller stopped")
  }
}

/// The gRPC server as a Service: serves until graceful shutdown, then ends control streams and
/// lets in-flight RPCs finish.
struct GRPCService: Service {
  let server: GRPCServer<HTTP2ServerTransport.Posix>
  let address: String
  let onReady: @Sendable (String, Int) -> Void
  let closeStreams: @Sendable () -> Void

  func run() async throws {
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        let bound: GRPCNIOTransportCore.SocketAddress
        do {
          bound = try await server.transport.listeningAddress
        } catch {
          server.beginGracefulShutdown()
          throw ControllerStartError.listen(address: address, reason: "\(error)")
        }
        if let ipv4 = bound.ipv4 {
          onReady(ipv4.host, ipv4.port)
        } else {
          onReady("\(bound)", 0)
        }
      }
    } onGracefulShutdown: {
      closeStreams()
      server.beginGracefulShutdown()
    }
  }
}

/// ControllerCore's background work (releasing quarantined blocks on ACKs, lease expiry) as a
/// Service, cancelled on graceful shutdown.
struct CoreService: Service {
  let core: ControllerCore
  let leaseCheckInterval: Duration

  func run() async throws {
    defer { core.finishAcknowledgements() }
    try await cancelWhenGracefulShutdown {
      try await core.run(leaseCheckInterval: leaseCheckInterval)
    }
  }
}

/// Serves the controller's metrics and refreshes them from the session registries every second:
/// connected hosts, versions pushed/ACKed/NACKed per host, push-to-ACK latency.
struct ControllerMetricsService: Service {
  let registry: TelemetryRegistry
  let sessions: ControlSessions
  let core: ControllerCore
  let host: String
  let port: Int
  let logger: Logger

  func run() async throws {
    let server = MetricsHTTPServer(registry: registry)
    let bound = try await server.start(host: host, port: port)
    logger.info("metrics", metadata: ["url": "http://\(host):\(bound)/metrics"])
    print("controller metrics on http://\(host):\(bound)/metrics")
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        let statuses = sessions.hosts.statuses() + sessions.edges.statuses()
        registry.gauge("hostnat_controller_connected_hosts").set(statuses.filter(\.connected).count)
        for status in statuses {
          let labels = [("host", status.hostID)]
          registry.counter("hostnat_controller_config_versions_pushed_total", labels: labels).set(status.pushes)
          registry.counter("hostnat_controller_config_versions_acked_total", labels: labels).set(status.acks)
          registry.counter("hostnat_controller_config_versions_nacked_total", labels: labels).set(status.nacks)
        }
        let refusals = (sessions.hosts.refusals, sessions.edges.refusals)
        registry.counter("hostnat_controller_ignored_acks_total").set(refusals.0.ignoredAcks + refusals.1.ignoredAcks)
        registry.counter("hostnat_controller_refused_hellos_total").set(refusals.0.refusedHellos + refusals.1.refusedHellos)
        registry.counter("hostnat_controller_refused_messages_total").set(refusals.0.refusedMessages + refusals.1.refusedMessages)
        registry.gauge("hostnat_controller_quarantined_blocks").set(core.pendingReleases.count)
        if let epoch = try? core.store.read({ reader in try reader.epoch() }) {
          registry.gauge("hostnat_controller_epoch").set(Int(clamping: epoch))
        }
        registry.gauge("hostnat_controller_conflicting_blocks").set(core.conflicts.count)
        for seconds in sessions.hosts.takeAckLatencies() + sessions.edges.takeAckLatencies() {
          registry.histogram("hostnat_controller_push_to_ack_seconds").record(seconds)
        }
        try? await Task.sleep(for: .seconds(1))
      }
    }
    await server.shutdown()
  }
}
