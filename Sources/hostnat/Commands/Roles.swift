import HostnatAddressing
import ArgumentParser
import HostnatAgent
import HostnatContracts
import HostnatDataplane
import Logging
import ServiceLifecycle
import UnixSignals
import HostnatInternet
import HostnatLab
import HostnatTrace

/// Runs one role's service until SIGTERM or SIGINT, then lets it stop cleanly (each role is a
/// service whose children stop in order on graceful shutdown).
func runRole(_ label: String, _ service: some Service) async throws {
  var logger = Logger(label: "hostnat.\(label)")
  logger.logLevel = .notice
  let group = ServiceGroup(configuration: .init(
    services: [.init(service: service)],
    gracefulShutdownSignals: [.sigterm, .sigint],
    logger: logger))
  try await group.run()
}

/// Runs a body with no children of its own (the netns bridges) until SIGTERM or SIGINT cancels it.
func runRole(_ label: String, _ body: @escaping @Sendable () async -> Void) async throws {
  try await runRole(label, ClosureService { await cancelWhenGracefulShutdown { await body() } })
}

struct AgentCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "agent",
    abstract: "Run a host agent: translates its VMs' packets; config from the controller, kept on disk.")

  @Option(help: "This host's id (as instances name it with --host).") var hostId: String
  @Option(help: "The controller's control address.") var controller: String = "127.0.0.1:7400"
  @Option(help: "UDP address of this host's underlay (Geneve from VMs and the edge).") var underlay: SocketAddress
  @Option(help: "Where the last good config, the flow table and status.json live.") var stateDir: String
  @Option(help: "The edge's underlay address: where Internet-bound packets go.") var edge: SocketAddress?
  @Option(help: "Flow table capacity.") var flows: Int = 262_144
  @Option(help: "Serve Prometheus metrics (/metrics, /healthz) on HOST:PORT (port 0: any).") var metrics: SocketAddress?
  @Option(help: "Append every control message sent and received to FILE as a JSON line (read it with `hostnat trace show`).") var traceControl: String?

  func run() async throws {
    var options = AgentOptions(hostID: hostId, controller: controller, underlay: underlay, stateDir: stateDir, edge: edge)
    options.flowCapacity = flows
    options.metrics = metrics
    options.trace = try traceControl.map { path in try openTrace(path, side: "agent", name: hostId) }
    let agent = try HostAgent(options: options)
    print("agent \(hostId) underlay \(agent.underlayAddress) controller \(controller) config v\(agent.link.status.appliedVersion) flow table \(agent.flowTableAttached ? "attached" : "new")")
    try await runRole("agent", agent)
    print("agent \(hostId) stopped")
  }
}

struct EdgeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "edge",
    abstract: "Run the edge: the emulated Internet's servers, and return traffic routed to the owning host.")

  @Option(help: "The controller's control address.") var controller: String = "127.0.0.1:7400"
  @Option(help: "UDP address of the edge's underlay.") var underlay: SocketAddress
  @Option(help: "Where the last routes and status.json live.") var stateDir: String
  @Option(help: "An Internet server: IP=SERVICE,... (udp-echo, tcp-echo, icmp-echo, whoami, stun, filtering-probe). Repeatable; default: the lab's three.")
  var server: [String] = []
  @Option(help: "A real Internet behind the edge (hostnat netns internet): where packets for non-server addresses go.")
  var uplink: SocketAddress?
  @Option(help: "Serve Prometheus metrics (/metrics, /healthz) on HOST:PORT (port 0: any).") var metrics: SocketAddress?
  @Option(help: "Append every control message sent and received to FILE as a JSON line (read it with `hostnat trace show`).") var traceControl: String?
  @Flag(help: "Record which host sent from which NAT IP:port, when (STATE_DIR/wire-ownership.json, every second): the lab's ownership checker reads it.")
  var recordOwnership = false

  func run() async throws {
    var options = EdgeOptions(controller: controller, underlay: underlay, stateDir: stateDir)
    options.recordOwnership = recordOwnership
    options.metrics = metrics
    options.trace = try traceControl.map { path in try openTrace(path, side: "edge", name: "edge") }
    options.uplink = uplink
    if !server.isEmpty { options.servers = try server.map { try ServiceNames.parseServer($0) } }
    let edge = try EdgeNode(options: options)
    print("edge underlay \(edge.underlayAddress) controller \(controller) servers \(options.servers.map { "\($0.ip)" }.joined(separator: ","))")
    try await runRole("edge", edge)
    print("edge stopped")
  }
}

struct ControlProxyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "control-proxy",
    abstract: "Run a control-channel fault proxy between agents (or the edge) and the controller (used by the lab).")

  @Option(help: "Where agents connect, HOST:PORT.") var listen: String
  @Option(help: "The controller, HOST:PORT.") var upstream: String
  @Option(help: "Faults file (JSON), re-read every 100 ms.") var faults: String
  @Option(help: "Status file (JSON) with what was forwarded, dropped and duplicated.") var status: String

  func run() async throws {
    func split(_ text: String, _ flag: String) throws -> (String, Int) {
      do {
        let address = try SocketAddress.parse(text, flag: flag, allowPortZero: flag == "--listen")
        return (address.host, Int(address.port))
      } catch {
        throw ValidationError(error.description)
      }
    }
    let listenAddress = try split(listen, "--listen")
    let upstreamAddress = try split(upstream, "--upstream")
    let proxy = ControlProxy(faultsPath: faults, statusPath: status)
    let upstreamText = upstream
    try await runRole("control-proxy", ControlProxyService(proxy: proxy, listen: listenAddress, upstream: upstreamAddress) { port in
      print("control-proxy listening on \(listenAddress.0):\(port) upstream \(upstreamText)")
    })
  }
}

/// The control proxy as a service: forwards until graceful shutdown.
struct ControlProxyService: Service {
  let proxy: ControlProxy
  let listen: (String, Int)
  let upstream: (String, Int)
  let ready: @Sendable (Int) -> Void

  func run() async throws {
    await cancelWhenGracefulShutdown {
      do {
        try await proxy.run(listen: listen, upstream: upstream, ready: ready)
      } catch {
        print("control-proxy: \(error)")
      }
    }
  }
}

/// Opens a `--trace-control` file, or fails the command with the reason.
func openTrace(_ path: String, side: String, name: String) throws -> ControlTrace {
  do {
    return try ControlTrace(path: path, side: side, selfName: name)
  } catch {
    throw ValidationError("--trace-control: \(error.description)")
  }
}
