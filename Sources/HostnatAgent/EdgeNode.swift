import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
public import HostnatDataplane
public import HostnatInternet
public import HostnatPackets
public import HostnatProto
import SwiftProtobuf
import Synchronization
import HostnatTelemetry
public import HostnatTrace

/// How to start the edge (`hostnat edge`).
public struct EdgeOptions: Sendable {
  public var controller: String
  public var underlay: HostnatDataplane.SocketAddress
  public var stateDir: String
  public var servers: [ServerSpec] = InternetServers.labDefault
  /// Where to serve Prometheus metrics; nil: not served.
  public var metrics: HostnatDataplane.SocketAddress?
  public var timing = ControlTiming()
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace?
  /// A real Internet behind the edge (namespaces mode): packets for addresses none of `servers`
  /// answers go there as Geneve VNI 2, and what comes back is routed like a server's reply.
  public var uplink: HostnatDataplane.SocketAddress?

  public init(controller: String, underlay: HostnatDataplane.SocketAddress, stateDir: String) {
    self.controller = controller
    self.underlay = underlay
    self.stateDir = stateDir
  }
}

/// What the edge writes to `status.json` in its state dir every second.
public struct EdgeStatus: Codable, Sendable {
  public var pid: Int32
  public var underlay: String
  public var control: ControlLinkStatus
  public var routes: Int
  public var dataplane: EdgeDataplaneStats
  public var servers: InternetCounters
  public var writtenMs: Int64
}

/// The emulated Internet: servers on documentation-range addresses, and return traffic routed
/// to whichever host owns the NAT IP:port block, by the routes the controller pushes.
public final class EdgeNode: Sendable {
  public let options: EdgeOptions
  public let bootID = UUID().uuidString.lowercased()
  public let link: ControlLink
  public let dataplane: EdgeDataplane<InternetServers>
  /// The routing snapshot in force and its file.
  let applied: AppliedSnapshot<Hostnat_V1_EdgeConfig>
  let registry = TelemetryRegistry()
  let metricsServer: MetricsHTTPServer

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
    if let saved {
      let r = try Self.routes(saved)
      try dataplane.setRoutes(r.routes, externalIPs: r.external, directClients: r.directClients, fabric: r.fabric)
    }
    applied = AppliedSnapshot(file: routesFile, loaded: saved, link: link) { $0.version }
  }

  public var underlayAddress: HostnatDataplane.SocketAddress { dataplane.socket.localAddress }

  /// The data plane's routing table for a snapshot; any malformed entry rejects the whole snapshot.
  public static func routes(
    _ config: Hostnat_V1_EdgeConfig
  ) throws(ConfigRejection) -> (
    routes: [EdgeRoute], external: [IPv4Address: HostnatDataplane.SocketAddress], directClients: [IPv4CIDR], fabric: [VPCFabricRoute]
  ) {
    var routes: [EdgeRoute] = []
    for (i, route) in config.natRoutes.enumerated() {
      guard let ip = IPv4Address(route.natIp) else { throw ConfigRejection("natRoutes[\(i)].natIp: \(route.natIp.debugDescription) is not an IPv4 address") }
      guard let host = HostnatDataplane.SocketAddress(route.underlayAddress) else {
        throw ConfigRejection("natRoutes[\(i)].underlayAddress: \(route.underlayAddress.debugDescription) is not IP:PORT")
      }
      guard route.count > 0, route.firstPort + route.count <= 65536 else {
        throw ConfigRejection("natRoutes[\(i)]: ports \(route.firstPort)+\(route.count) out of range")
      }
      routes.append(EdgeRoute(natIP: ip, firstPort: UInt16(route.firstPort), count: Int(route.count), host: host))
    }
    var external: [IPv4Address: HostnatDataplane.SocketAddress] = [:]
    for (i, route) in config.externalRoutes.enumerated() {
      guard let ip = IPv4Address(route.externalIp), let host = HostnatDataplane.SocketAddress(route.underlayAddress) else {
        throw ConfigRejection("externalRoutes[\(i)]: \(route.externalIp) via \(route.underlayAddress) is not valid")
      }
      external[ip] = host
    }
    // Private Google Access replies go to internal IPs; the edge routes them like 1:1 addresses.
    for (i, route) in config.privateGoogleAccessRoutes.enumerated() {
      guard let ip = IPv4Address(route.externalIp), let host = HostnatDataplane.SocketAddress(route.underlayAddress) else {
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
      guard let destination = IPv4CIDR(route.destination), let host = HostnatDataplane.SocketAddress(route.underlayAddress),
        (1...Underlay.maxFabricID).contains(route.networkID)
      else {
        throw ConfigRejection("vpcRoutes[\(i)]: network \(route.networkID) \(route.destination) via \(route.underlayAddress) is not valid")
      }
      fabric.append(VPCFabricRoute(networkID: route.networkID, destination: destination, host: host))
    }
    return (routes, external, clients, fabric)
  }

  public func run() async {
    dataplane.start()
    await runNode(
      name: "edge", metrics: (metricsServer, options.metrics), link: link,
      session: { client in try await self.session(client) },
      tick: {
        let stats = self.dataplane.stats()
        self.registry.update(edge: stats)
        self.writeStatus(stats)
      })
    writeStatus()
  }

  public func stop() {
    dataplane.stop()
    writeStatus()
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
    switch answer {
    case .ack:
      return .with { $0.ack = .with { $0.nonce = push.nonce; $0.version = config.version } }
    case .nack(let reason):
      return .with { $0.nack = .with { $0.nonce = push.nonce; $0.version = config.version; $0.appliedVersion = held; $0.error = reason } }
    }
  }

  func session(_ client: ControlClient) async throws {
    let control = Hostnat_V1_EdgeControlService.Client(wrapping: client)
    let (outbound, continuation) = AsyncStream<Hostnat_V1_EdgeMessage>.makeStream()
    let held = applied.version
    continuation.yield(.with {
      $0.hello = .with {
        $0.hostID = "edge"
        $0.bootID = bootID
        $0.appliedVersion = held
        $0.underlayAddress = underlayAddress.description
        $0.softwareVersion = "hostnat"
      }
    })
    link.heard()
    let trace = options.trace
    let stream = trace?.nextStream() ?? 0
    let controller = options.controller
    try await control.connect(options: ControlLink.streamOptions) { writer in
      for await message in outbound {
        trace?.record(.sent, peer: controller, stream: stream, message)
        try await writer.write(message)
      }
    } onResponse: { response in
      try await self.link.serve(
        response.messages, outbound: continuation,
        heartbeat: { .with { $0.heartbeat = .with { $0.sentMs = nowMs() } } }
      ) { message in
        trace?.record(.received, peer: controller, stream: stream, message)
        if case .push(let push)? = message.message { return self.handlePush(push) }
        return nil
      }
    }
  }
}
