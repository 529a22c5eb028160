public import HostnatAddressing
import Foundation
public import HostnatContracts
import HostnatControlRules
public import HostnatDataplane
public import HostnatInternet
import HostnatPackets
public import HostnatProto
import HostnatMetrics
import HostnatTelemetry
public import HostnatTrace
import Logging
public import ServiceLifecycle

/// How to start the edge (`hostnat edge`).
public struct EdgeOptions: Sendable {
  public var controller: String
  public var underlay: SocketAddress
  public var stateDir: String
  public var servers: [ServerSpec] = InternetServers.labDefault
  /// Where to serve Prometheus metrics; nil: not served.
  public var metrics: SocketAddress?
  public var timing = ControlTiming()
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace?
  /// A real Internet behind the edge (namespaces mode): packets for addresses none of `servers`
  /// answers go there as Geneve VNI 2, and what comes back is routed like a server's reply.
  public var uplink: SocketAddress?
  /// Record every host's use of every NAT IP:port on the wire (STATE_DIR/wire-ownership.json).
  public var recordOwnership = false

  public init(controller: String, underlay: SocketAddress, stateDir: String) {
    self.controller = controller
    self.underlay = underlay
    self.stateDir = stateDir
  }
}

/// The emulated Internet: servers on documentation-range addresses, and return traffic routed
/// to whichever host owns the NAT IP:port block, by the routes the controller pushes. A service
/// with the same children as an agent: packet loop, metrics endpoint, control stream, tick.
public final class EdgeNode: Service, Sendable {
  public let options: EdgeOptions
  public let bootID = UUID().uuidString.lowercased()
  public let link: ControlLink
  public let dataplane: EdgeDataplane<InternetServers>
  /// The routing snapshot in force and its file.
  let applied: AppliedSnapshot<Hostnat_V1_EdgeConfig>
  let registry = TelemetryRegistry()
  let metricsServer: MetricsHTTPServer
  let logger: Logger

  public init(options: EdgeOptions) throws {
    metricsServer = MetricsHTTPServer(registry: registry)
    self.options = options
    link = try ControlLink(controller: options.controller, timing: options.timing)
    try FileManager.default.createDirectory(atPath: options.stateDir, withIntermediateDirectories: true)
    let routesFile = StateFile<Hostnat_V1_EdgeConfig>(path: options.stateDir + "/routes.pb")
    let saved = try routesFile.load()
    let socket = try UDPSocket(binding: options.underlay)
    dataplane = EdgeDataplane(socket: socket, servers: InternetServers(servers: options.servers))
    if let uplink = options.uplink { dataplane.setUplink(uplink, serverIPs: Set(options.servers.map(\.ip))) }
    if options.recordOwnership { dataplane.setOwnershipRecording(true) }
    if let saved {
      let r = try Self.routes(saved)
      try dataplane.setRoutes(r.routes, externalIPs: r.external, directClients: r.directClients, fabric: r.fabric)
    }
    applied = AppliedSnapshot(file: routesFile, loaded: saved, link: link) { $0.token }
    var logger = Logger(label: "hostnat.edge")
    logger.logLevel = .notice
    self.logger = logger
  }

  public var underlayAddress: SocketAddress { dataplane.socket.localAddress }

  /// The data plane's routing table for a snapshot; any malformed entry rejects the whole snapshot.
  public static func routes(
    _ config: Hostnat_V1_EdgeConfig
  ) throws(ConfigRejection) -> (
    routes: [EdgeRoute], external: [IPv4Address: SocketAddress], directClients: [IPv4CIDR], fabric: [VPCFabricRoute]
  ) {
    var routes: [EdgeRoute] = []
    for (i, route) in config.natRoutes.enumerated() {
      guard let ip = IPv4Address(route.natIp) else { throw ConfigRejection("natRoutes[\(i)].natIp: \(route.natIp.debugDescription) is not an IPv4 address") }
      guard let host = SocketAddress(route.underlayAddress) else {
        throw ConfigRejection("natRoutes[\(i)].underlayAddress: \(route.underlayAddress.debugDescription) is not IP:PORT")
      }
      guard route.count > 0, UInt64(route.firstPort) + UInt64(route.count) <= 65536 else {
        throw ConfigRejection("natRoutes[\(i)]: ports \(route.firstPort)+\(route.count) out of range")
      }
      routes.append(EdgeRoute(natIP: ip, firstPort: UInt16(route.firstPort), count: Int(route.count), host: host))
    }
    var external: [IPv4Address: SocketAddress] = [:]
    for (i, route) in config.externalRoutes.enumerated() {
      guard let ip = IPv4Address(route.externalIp), let host = SocketAddress(route.underlayAddress) else {
        throw ConfigRejection("externalRoutes[\(i)]: \(route.externalIp) via \(route.underlayAddress) is not valid")
      }
      external[ip] = host
    }
    // Private Google Access replies go to internal IPs; the edge routes them like 1:1 addresses.
    for (i, route) in config.privateGoogleAccessRoutes.enumerated() {
      guard let ip = IPv4Address(route.externalIp), let host = SocketAddress(route.underlayAddress) else {
        throw ConfigRejection("privateGoogleAccessRoutes[\(i)]: \(route.externalIp) via \(route.underlayAddress) is not valid")
      }
      external[ip] = host
    }
    var clients: [IPv4CIDR] = []
    for (i, text) in config.directClientRanges.enumerated() {
      guard let cidr = IPv4CIDR(text) else { throw ConfigRejection("directClientRanges[\(i)]: \(text.debugDescription) is not a CIDR range") }
      clients.append(cidr)
    }
    var fabric: [VPCFabricRoute] = []
    for (i, route) in config.vpcRoutes.enumerated() {
      guard let destination = IPv4CIDR(route.destination), let host = SocketAddress(route.underlayAddress),
        (1...Underlay.maxFabricID).contains(route.networkID)
      else {
        throw ConfigRejection("vpcRoutes[\(i)]: network \(route.networkID) \(route.destination) via \(route.underlayAddress) is not valid")
      }
      fabric.append(VPCFabricRoute(networkID: route.networkID, destination: destination, host: host))
    }
    return (routes, external, clients, fabric)
  }

  /// Serves until graceful shutdown, then stops the data plane and writes the last status.
  public func run() async throws {
    let control = ControlStreamClient<EdgeControl>(
      link: link, trace: options.trace,
      hello: {
        EdgeControl.hello(
          nodeID: "edge", bootID: self.bootID, applied: self.applied.token, underlay: self.underlayAddress.description,
          blocks: self.applied.value.map(Inventory.blocks(of:)) ?? [])
      },
      handle: { message in
        if case .push(let push)? = message.message { return self.handlePush(push) }
        return nil
      })
    try await runNodeServices(
      logger: logger, packetLoop: PacketLoopService(start: { self.dataplane.start() }, stop: { self.dataplane.stop() }),
      metrics: MetricsEndpoint(name: "edge", server: metricsServer, address: options.metrics),
      control: control,
      tick: {
        let stats = self.dataplane.stats()
        self.registry.update(edge: stats)
        self.writeStatus(stats)
        self.writeOwnershipRecord()
      })
    stop()
  }

  public func stop() {
    dataplane.stop()
    writeStatus()
    writeOwnershipRecord()
  }

  /// The wire ownership record, when recording (`--record-ownership`).
  func writeOwnershipRecord() {
    guard options.recordOwnership else { return }
    StatusFile.write(dataplane.ownershipRecord(), to: options.stateDir + "/wire-ownership.json")
  }

  public var status: EdgeStatus { status(dataplane.stats()) }

  func status(_ stats: EdgeDataplaneStats) -> EdgeStatus {
    EdgeStatus(
      pid: getpid(), underlay: underlayAddress.description, control: link.status,
      routes: applied.value?.natRoutes.count ?? 0, dataplane: stats,
      servers: dataplane.withServers { $0.counters }, writtenMs: nowMs())
  }

  func writeStatus(_ stats: EdgeDataplaneStats? = nil) {
    StatusFile.write(status(stats ?? dataplane.stats()), to: options.stateDir + "/status.json")
  }

  public func handlePush(_ push: Hostnat_V1_EdgePush) -> Hostnat_V1_EdgeMessage {
    let config = push.config
    let held = applied.version
    let answer = applied.offer(config) { config in
      let r = try Self.routes(config)
      try dataplane.setRoutes(r.routes, externalIPs: r.external, directClients: r.directClients, fabric: r.fabric)
    } restore: { previous in
      if let previous, let r = try? Self.routes(previous) {
        try? dataplane.setRoutes(r.routes, externalIPs: r.external, directClients: r.directClients, fabric: r.fabric)
      }
    }
    return EdgeControl.answer(answer, nonce: push.nonce, offered: config.token, held: held)
  }
}
