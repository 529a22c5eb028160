import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatDesiredState
import HostnatDataplane
import HostnatPackets
import HostnatProto
import SwiftProtobuf

/// What `lab scenario serverless-egress --json` prints: the checks, and per service where its
/// requests entered the network and which source IPs the what-is-my-IP server saw.
public struct ServerlessEgressReport: Codable, Sendable, JSONReport {
  public struct Service: Codable, Sendable {
    public var name: String
    public var vpc_egress: String
    /// "connector:NAME", "direct:NETWORK/SUBNET" or "none".
    public var vpc: String
    /// Per request: "connector-instance:NAME", "vpc-instance:NAME" or "platform:IP".
    public var paths: [String]
    /// Source IPs the server saw (sorted, unique).
    public var seen_from: [String]
    /// Where its first instance's request to the private VM (`private_vm`) enters the VPC.
    public var private_range_path: String
    /// Source IPs the private VM's what-is-my-IP server saw (sorted, unique): sent, through the
    /// VPC fabric, untranslated.
    public var private_seen_from: [String]
    public var serverless_egress_ip: String
  }
  public var scenario: String
  public var passed: Bool
  public var checks: [Check]
  public var nat_ip: String
  public var services: [Service]
  public var connector_instances_before: [String]
  public var connector_instances_scaled: [String]
  public var connector_instances_after: [String]
  /// A VM of cloudrun-vpc with no public address that serves what-is-my-IP, and the ingress rule
  /// that lets the connector's range (only) reach it.
  public var private_vm: String
  public var private_vm_ingress: String
  public var dir: String
}

/// The serverless-egress scenario: brings up the seed's Cloud Run lab, sends a what-is-my-IP
/// request from every service instance the way its egress setting routes it, and checks which
/// source the server saw; then scales the connector with load and checks the new instances NAT.
struct ServerlessEgress: LabScenario {
  let name = "serverless-egress"
  let summary = "the seed's Cloud Run walkthrough: services through a shared connector get the static NAT IP, private-ranges-only does not, the connector scales and its new instances NAT"
  let topology: ScenarioTopology = .serverless

  func run(on lab: Lab) async throws -> any ScenarioOutcome {
    let topology = self.topology.parsed
    let region = topology.region
    let natIP = topology.addresses?.first?.address ?? ""
    let checks = LabChecks(say: lab.say)
    let state = try await lab.up(self.topology)
    var report = ServerlessEgressReport(
      scenario: name, passed: false, checks: [], nat_ip: natIP, services: [], connector_instances_before: [],
      connector_instances_scaled: [], connector_instances_after: [], private_vm: "", private_vm_ingress: "", dir: lab.dir)
    do {
      let admin = try LabAdmin(controller: state.controller)
      try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      lab.say("\nscenario \(name): \(summary)")
      let whoami = IPv4Address(topology.servers.first { $0.services.contains("whoami") }?.ip ?? "192.0.2.10")!

      var (services, connectors, instances) = try await Self.read(admin)
      let connector = connectors.first { $0.name == "cloudrun-connector" }
      report.connector_instances_before = connector?.instances ?? []
      checks.add(
        "connector READY at its minimum", connector?.state == "READY" && connector?.instances.count == Int(connector?.minInstances ?? 0),
        "cloudrun-connector: \(connector?.state ?? "missing"), instances \(connector?.instances.joined(separator: ",") ?? "")")

      let seen = try await probe(services: services, connectors: connectors, instances: instances, state: state, server: whoami)

      // Private ranges: a VM of the VPC serving what-is-my-IP, reachable from the connector's
      // range only. Requests to it go through the connector whatever the egress setting, and
      // reach it untranslated through the VPC fabric; Direct VPC egress sources are refused by
      // its ingress rule.
      let backendHost = topology.hosts.last ?? "host-2"
      let connectorRange = connector?.ipCidrRange ?? "10.8.0.0/28"
      let backend = try await admin.with { client, options in
        _ = try await client.createFirewallRule(.with {
          $0.rule = .with {
            $0.name = "allow-connector-to-private-vm"
            $0.network = "cloudrun-vpc"
            $0.direction = .ingress
            $0.allow = true
            $0.rules = [.with { $0.ipProtocol = "udp"; $0.ports = ["80"] }]
            $0.sourceRanges = [connectorRange]
          }
        }, options: options)
        return try await client.createInstance(.with {
          $0.instance = .with {
            $0.name = "private-vm"
            $0.host = backendHost
            $0.networkInterfaces = [.with { $0.subnet = "cloudrun-direct-subnet" }]
          }
        }, options: options)
      }
      guard let backendIP = IPv4Address(backend.networkInterfaces.first?.networkIp ?? "") else { throw LabError("private-vm has no IP") }
      report.private_vm = "private-vm \(backendIP) on \(backendHost)"
      report.private_vm_ingress = "allow udp:80 from \(connectorRange)"
      try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      (services, connectors, instances) = try await Self.read(admin)
      let deniedBefore = state.agentStatus(backendHost)?.dataplane.global.firewallDeniedIngress ?? 0
      let privateSeen = try await probe(
        services: services, connectors: connectors, instances: instances, state: state, server: backendIP,
        backends: [(backendIP, backendHost)])
      let deniedIngress = (state.agentStatus(backendHost)?.dataplane.global.firewallDeniedIngress ?? 0) - deniedBefore
      for service in services {
        let conn = connectors.first { $0.name == service.vpcConnector }
        let k = Int(max(1, service.instances))
        let paths = (0..<k).map { Self.describe(ServerlessModel.path(service, instance: $0, to: whoami, connector: conn)) }
        report.services.append(.init(
          name: service.name, vpc_egress: service.vpcEgress == .allTraffic ? "all-traffic" : "private-ranges-only",
          vpc: !service.vpcConnector.isEmpty ? "connector:\(service.vpcConnector)" : (service.subnet.isEmpty ? "none" : "direct:\(service.network)/\(service.subnet)"),
          paths: paths, seen_from: (seen[service.name] ?? []).sorted(),
          private_range_path: Self.describe(ServerlessModel.path(service, instance: 0, to: backendIP, connector: conn)),
          private_seen_from: (privateSeen[service.name] ?? []).sorted(),
          serverless_egress_ip: service.serverlessEgressIp))
      }
      for s in report.services {
        if s.vpc_egress == "all-traffic" {
          checks.add("\(s.name) is seen from the static NAT IP", s.seen_from == [natIP], "\(s.vpc), \(s.vpc_egress): seen from \(s.seen_from.joined(separator: ",")) via \(s.paths.joined(separator: " "))")
        } else {
          checks.add(
            "\(s.name) bypasses the VPC for the Internet", s.seen_from == [s.serverless_egress_ip] && !s.seen_from.contains(natIP),
            "\(s.vpc), \(s.vpc_egress): seen from \(s.seen_from.joined(separator: ",")) (platform egress IP \(s.serverless_egress_ip)); private ranges still go \(s.private_range_path)")
        }
      }
      let inConnectorRange = { (ip: String) in IPv4CIDR(connectorRange).map { r in IPv4Address(ip).map { r.contains($0) } ?? false } ?? false }
      for s in report.services where s.vpc.hasPrefix("connector:") {
        checks.add(
          "\(s.name) reaches the private VM through the connector, untranslated",
          !s.private_seen_from.isEmpty && s.private_seen_from.allSatisfy(inConnectorRange),
          "\(s.vpc_egress): private-vm saw \(s.private_seen_from.joined(separator: ",")) (connector range \(connectorRange)) via \(s.private_range_path)")
      }
      for s in report.services where s.vpc.hasPrefix("direct:") {
        checks.add(
          "\(s.name)'s instances are refused by the private VM's ingress rule",
          s.private_seen_from.isEmpty && deniedIngress > 0,
          "private-vm saw \(s.private_seen_from.isEmpty ? "nothing" : s.private_seen_from.joined(separator: ",")); \(backendHost) denied \(deniedIngress) packet(s) at ingress (\(report.private_vm_ingress))")
      }
      let shared = report.services.filter { $0.vpc == "connector:cloudrun-connector" && $0.vpc_egress == "all-traffic" }
      checks.add(
        "services sharing the connector share the NAT IP", shared.count >= 3 && Set(shared.flatMap(\.seen_from)) == [natIP],
        "\(shared.map(\.name).joined(separator: ", ")) → \(Set(shared.flatMap(\.seen_from)).sorted().joined(separator: ","))")

      // Load: service-a grows to 12 instances; the connector follows (15 serverless instances at
      // 4 per connector instance → 4 instances), and the new instances get ports and NAT.
      /// Redeploys service-a (connector, all-traffic) with `instances` instances and waits until
      /// every host holds the result.
      func deployServiceA(instances: UInt32) async throws {
        try await admin.with { client, options in
          _ = try await client.deployService(.with {
            $0.service = .with {
              $0.name = "service-a"
              $0.region = region
              $0.instances = instances
              $0.vpcConnector = "cloudrun-connector"
              $0.vpcEgress = .allTraffic
            }
          }, options: options)
        }
        try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      }
      try await deployServiceA(instances: 12)
      (services, connectors, instances) = try await Self.read(admin)
      let grown = connectors.first { $0.name == "cloudrun-connector" }
      report.connector_instances_scaled = grown?.instances ?? []
      let added = (grown?.instances ?? []).filter { !report.connector_instances_before.contains($0) }
      checks.add(
        "the connector scales out with load", (grown?.instances.count ?? 0) == ServerlessModel.desiredInstances(grown ?? .init(), load: 15) && !added.isEmpty,
        "load \(grown?.load ?? 0) serverless instances → \(grown?.instances.count ?? 0) connector instances (added \(added.joined(separator: ",")))")
      let mapping = try await admin.with { client, options in
        try await client.getNatMappingInfo(.with { $0.region = region; $0.router = "cloudrun-nat-router" }, options: options)
      }
      let withPorts = added.filter { name in
        mapping.result.first { $0.instanceName == name }.map { $0.interfaceNatMappings.contains { $0.numTotalNatPorts > 0 } } ?? false
      }
      checks.add("added connector instances get NAT ports", !added.isEmpty && withPorts.count == added.count, "\(withPorts.count)/\(added.count) have ports")
      let scaledSeen = try await probe(
        services: services.filter { $0.name == "service-a" }, connectors: connectors, instances: instances, state: state, server: whoami)
      checks.add(
        "service-a, spread over the grown connector, is still seen from the NAT IP", scaledSeen["service-a"] == [natIP],
        "seen from \((scaledSeen["service-a"] ?? []).sorted().joined(separator: ","))")

      try await deployServiceA(instances: 1)
      (_, connectors, _) = try await Self.read(admin)
      report.connector_instances_after = connectors.first { $0.name == "cloudrun-connector" }?.instances ?? []
      checks.add(
        "the connector scales back in to its minimum", report.connector_instances_after.count == Int(grown?.minInstances ?? 2),
        "\(report.connector_instances_after.joined(separator: ","))")
      let blocks = state.heldPortBlocks(hosts: topology.hosts)
      let clashes = LabState.clashes(blocks, owner: \.vm)
      checks.add(
        "no NAT IP:port block is held by two VMs", clashes.isEmpty,
        clashes.isEmpty ? "\(blocks.count) blocks, each held by one VM" : clashes.prefix(5).joined(separator: "; "))
    } catch {
      checks.add("scenario ran to the end", false, "\(error)")
    }
    try? await lab.down()
    report.checks = checks.list
    report.passed = !report.checks.isEmpty && report.checks.allSatisfy(\.passed)
    lab.say("\n\(report.passed ? "PASSED" : "FAILED"): \(report.checks.filter(\.passed).count)/\(report.checks.count) checks held")
    return report
  }

  static func describe(_ path: ServerlessModel.EgressPath) -> String {
    switch path {
    case .connector(let instance): "connector-instance:\(instance)"
    case .vpcInstance(let name): "vpc-instance:\(name)"
    case .platform(let ip): "platform:\(ip)"
    }
  }

  static func read(_ admin: LabAdmin) async throws -> ([Hostnat_V1_ServerlessService], [Hostnat_V1_ServerlessConnector], [Hostnat_V1_Instance]) {
    try await admin.with { client, options in
      (
        try await client.listServices(.init(), options: options).services,
        try await client.listServerlessConnectors(.init(), options: options).connectors,
        try await client.listInstances(.init(), options: options).instances
      )
    }
  }

  /// Sends what-is-my-IP requests from every instance of `services` along its egress path and
  /// returns, per service, the source IPs the server reported. Requests that enter the VPC leave
  /// from a VM's IP (a connector instance, which SNATs its clients to its own IP on distinct
  /// ports, or a Direct VPC egress instance) through that VM's host agent; the rest leave from
  /// the platform's egress IP straight to the edge.
  func probe(
    services: [Hostnat_V1_ServerlessService], connectors: [Hostnat_V1_ServerlessConnector], instances: [Hostnat_V1_Instance],
    state: LabState, server: IPv4Address, backends: [(ip: IPv4Address, host: String)] = []
  ) async throws -> [String: Set<String>] {
    var requests: [WhoamiProbe.Request] = []
    for service in services {
      let connector = connectors.first { $0.name == service.vpcConnector && $0.region == service.region }
      for k in 0..<Int(max(1, service.instances)) {
        switch ServerlessModel.path(service, instance: k, to: server, connector: connector) {
        case .connector(let name), .vpcInstance(let name):
          guard let vm = instances.first(where: { $0.name == name }), let ip = IPv4Address(vm.networkInterfaces.first?.networkIp ?? "") else {
            throw LabError("\(service.name): instance \(name) has no IP")
          }
          requests.append(.init(label: service.name, source: ip, host: vm.host, server: server))
        case .platform(let egress):
          guard let ip = IPv4Address(egress) else { throw LabError("\(service.name): no platform egress IP") }
          requests.append(.init(label: service.name, source: ip, host: nil, server: server))
        }
      }
    }
    return try await WhoamiProbe.run(requests, state: state, backends: backends)
  }
}
