import HostnatAddressing
import HostnatMetrics
import Logging
import ServiceLifecycle

/// Runs a data-plane process's child services (agent or edge) until graceful shutdown. They start
/// in this order and stop in reverse: the ticker first, then the control stream, the metrics
/// endpoint, and last the packet loop, which forwards on its own thread until the rest is down.
func runNodeServices(
  logger: Logger, packetLoop: PacketLoopService, metrics: MetricsEndpoint, control: any Service,
  tick: @escaping @Sendable () -> Void
) async throws {
  // No signals here: the parent group (the command's) has them and passes graceful shutdown down.
  let group = ServiceGroup(services: [packetLoop, metrics, control, Ticker(tick: tick)], logger: logger)
  try await group.run()
}

/// A packet loop (its own thread, started and stopped by its data plane) as a service.
struct PacketLoopService: Service {
  let start: @Sendable () -> Void
  let stop: @Sendable () -> Void

  func run() async throws {
    start()
    try? await gracefulShutdown()
    stop()
  }
}

/// Serves `/metrics` and `/healthz` when an address is given; a node runs on without them when
/// they cannot be served.
struct MetricsEndpoint: Service {
  let name: String
  let server: MetricsHTTPServer
  let address: SocketAddress?
  /// Told the bound port (the address may ask for port 0).
  var bound: @Sendable (Int) -> Void = { _ in }

  func run() async throws {
    if let address {
      do {
        let port = try await server.start(host: "\(address.ip)", port: Int(address.port))
        bound(port)
        print("\(name) metrics on http://\(address.ip):\(port)/metrics")
      } catch {
        print("\(name): metrics not served: \(error)")
      }
    }
    try? await gracefulShutdown()
    await server.shutdown()
  }
}

/// Runs `tick` (status file, metrics, port demand) once a second, off the packet path.
struct Ticker: Service {
  let tick: @Sendable () -> Void

  func run() async throws {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        tick()
        try? await Task.sleep(for: .seconds(1))
      }
    }
  }
}
