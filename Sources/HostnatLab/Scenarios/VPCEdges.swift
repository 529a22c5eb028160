import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatDataplane
import HostnatPackets
import HostnatProto
import SwiftProtobuf

/// What `lab scenario vpc-edges --json` prints.
public struct VPCEdgesReport: Codable, Sendable, JSONReport {
  public struct Probe: Codable, Sendable {
    /// "STEP: what was asked".
    public var probe: String
    public var seen_from: [String]
  }
  public var scenario: String
  public var passed: Bool
  public var checks: [Check]
  public var probes: [Probe]
  public var dir: String
}

/// The network around NAT on a live lab (deploy/lab/serverless.yaml): Private Google Access, a
/// NAT rule, an egress firewall rule (by target tag) and a custom route are each created through the admin API,
/// pushed to the hosts, and checked with what-is-my-IP requests from a VM: the source the server
/// sees, or no answer plus the host's counter for why.
struct VPCEdges: LabScenario {
  let name = "vpc-edges"
  let summary = "Private Google Access leaves untranslated, a NAT rule picks its IP by destination, a firewall rule (on the VMs with its target tag) and a custom route take traffic away from NAT (each counted by the host), Shared VPC, peering and two NICs"
  let topology = ScenarioTopology.serverless

  func run(on lab: Lab) async throws -> any ScenarioOutcome {
    let topology = self.topology.parsed
    let region = topology.region
    let checks = LabChecks(say: lab.say)
    let state = try await lab.up(self.topology)
    var probes: [VPCEdgesReport.Probe] = []
    do {
      let admin = try LabAdmin(controller: state.controller)
      lab.say("\nscenario \(name): \(summary)")
      let host = topology.hosts.last ?? "host-2"
      let vm = try await admin.with { client, options in
        try await client.createInstance(.with {
          $0.instance = .with { $0.name = "probe-vm"; $0.host = host; $0.networkInterfaces = [.with { $0.subnet = "cloudrun-direct-subnet" }] }
        }, options: options)
      }
      guard let vmIP = IPv4Address(vm.networkInterfaces.first?.networkIp ?? "") else { throw LabError("probe-vm has no IP") }
      try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      let natIP = topology.addresses?.first?.address ?? ""
      let echo10 = IPv4Address(192, 0, 2, 10)
      let echo20 = IPv4Address(192, 0, 2, 20)
      let echo30 = IPv4Address(192, 0, 2, 30)
      let google = IPv4Address(198, 51, 100, 8)

      // Each step asks from source ports no step used before (new connections), one per probe,
      // unless told to reuse some.
      func unusedPort() -> UInt16 { WhoamiProbe.firstPort + UInt16(probes.count) }
      func ask(_ step: String, _ servers: [IPv4Address], firstPort: UInt16? = nil) async throws -> [IPv4Address: [String]] {
        let requests = servers.map { WhoamiProbe.Request(label: "\(step): \($0)", source: vmIP, host: host, server: $0) }
        let seen = try await WhoamiProbe.run(requests, state: state, firstPort: firstPort ?? unusedPort())
        var out: [IPv4Address: [String]] = [:]
        for server in servers {
          let ips = (seen["\(step): \(server)"] ?? []).sorted()
          out[server] = ips
          probes.append(.init(probe: "\(step): whoami \(server) from probe-vm (\(vmIP))", seen_from: ips))
        }
        return out
      }
      func global() -> GlobalStats? { state.agentStatus(host)?.dataplane.global }
      func converge() async throws { try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30)) }

      // 1. Private Google Access: on by itself, since the gateway translates the subnet.
      let before = global()
      var seen = try await ask("baseline", [echo10, google])
      checks.add("Internet traffic is NATed", seen[echo10] == [natIP], "192.0.2.10 saw \(seen[echo10] ?? [])")
      let pga = (global()?.privateGoogleAccessOut ?? 0) - (before?.privateGoogleAccessOut ?? 0)
      checks.add(
        "Private Google Access leaves with the internal IP, never the NAT IP", seen[google] == ["\(vmIP)"] && pga > 0,
        "198.51.100.8 (Google APIs range) saw \(seen[google] ?? []); \(pga) packets passed untranslated")

      // 2. A NAT rule: 192.0.2.20 gets the rule's IP, everything else the gateway's.
      try await admin.with { client, options in
        _ = try await client.createAddress(.with { $0.address = .with { $0.name = "rule-ip"; $0.region = region; $0.address = "203.0.113.11" } }, options: options)
        var nat = try await client.getNat(.with { $0.region = region; $0.router = "cloudrun-nat-router"; $0.name = "cloudrun-nat-gateway" }, options: options)
        nat.rules = [.with {
          $0.ruleNumber = 100
          $0.match = #"destination.ip == "192.0.2.20""#
          $0.sourceNatActiveIps = ["rule-ip"]
        }]
        _ = try await client.updateNat(.with { $0.region = region; $0.router = "cloudrun-nat-router"; $0.nat = nat; $0.updateMask = ["rules"] }, options: options)
      }
      try await converge()
      seen = try await ask("nat rule 100", [echo10, echo20])
      checks.add(
        "a NAT rule picks the NAT IP by destination", seen[echo20] == ["203.0.113.11"] && seen[echo10] == [natIP],
        "192.0.2.20 (rule 100) saw \(seen[echo20] ?? []), 192.0.2.10 (no rule) saw \(seen[echo10] ?? [])")

      // 3. An egress firewall rule, applied before NAT to the VMs carrying its target tag.
      try await admin.with { client, options in
        _ = try await client.createFirewallRule(.with {
          $0.rule = .with {
            $0.name = "deny-whoami-30"
            $0.network = "cloudrun-vpc"
            $0.direction = .egress
            $0.priority = 900
            $0.rules = [.with { $0.ipProtocol = "udp"; $0.ports = ["80"] }]
            $0.destinationRanges = ["192.0.2.30/32"]
            $0.targetTags = ["no-whoami-30"]
          }
        }, options: options)
      }
      try await converge()
      let untaggedPort = unusedPort()
      seen = try await ask("firewall deny, VM untagged", [echo30])
      checks.add(
        "a rule with target tags spares VMs without them", seen[echo30] == [natIP],
        "192.0.2.30 saw \(seen[echo30] ?? []) while probe-vm lacked the tag no-whoami-30")
      try await admin.with { client, options in
        _ = try await client.updateInstanceTags(.with { $0.name = "probe-vm"; $0.add = ["no-whoami-30"] }, options: options)
      }
      try await converge()
      let denyBefore = global()?.firewallDeniedEgress ?? 0
      seen = try await ask("firewall deny, VM tagged", [echo30, echo10])
      let denied = (global()?.firewallDeniedEgress ?? 0) - denyBefore
      checks.add(
        "tagging the VM puts it under the egress deny rule: dropped before NAT, only what it matches", seen[echo30] == [] && seen[echo10] == [natIP] && denied > 0,
        "192.0.2.30 answered from \(seen[echo30] ?? []) (nothing expected), \(denied) packets denied; 192.0.2.10 saw \(seen[echo10] ?? [])")
      seen = try await ask("firewall deny, VM tagged, connection from before", [echo30], firstPort: untaggedPort)
      checks.add(
        "a connection opened before the tag goes on (rules are stateful)", seen[echo30] == [natIP],
        "192.0.2.30 saw \(seen[echo30] ?? []) from the source port used while untagged (\(untaggedPort))")
      try await admin.with { client, options in _ = try await client.deleteFirewallRule(.with { $0.name = "deny-whoami-30" }, options: options) }
      try await converge()
      seen = try await ask("firewall rule deleted", [echo30])
      checks.add("deleting the rule lets the traffic through again", seen[echo30] == [natIP], "192.0.2.30 saw \(seen[echo30] ?? [])")

      // 4. A custom route to a next-hop instance: Cloud NAT no longer applies to its destination.
      try await admin.with { client, options in
        _ = try await client.createRoute(.with {
          $0.route = .with { $0.name = "via-vm-1"; $0.network = "cloudrun-vpc"; $0.destRange = "192.0.2.10/32"; $0.nextHop.instance = "vm-1" }
        }, options: options)
      }
      try await converge()
      let routedBefore = global()?.routedToNextHop ?? 0
      seen = try await ask("route via vm-1", [echo10, echo20])
      let routed = (global()?.routedToNextHop ?? 0) - routedBefore
      checks.add(
        "a route to a next-hop instance takes its destination away from NAT", seen[echo10] == [] && routed > 0 && seen[echo20] == ["203.0.113.11"],
        "192.0.2.10 answered from \(seen[echo10] ?? []) (nothing expected), \(routed) packets sent to the next hop; 192.0.2.20 saw \(seen[echo20] ?? [])")
      try await admin.with { client, options in _ = try await client.deleteRoute(.with { $0.name = "via-vm-1" }, options: options) }
      try await converge()
      seen = try await ask("route deleted", [echo10])
      checks.add("deleting the route brings NAT back", seen[echo10] == [natIP], "192.0.2.10 saw \(seen[echo10] ?? [])")

      // 5. Shared VPC: a network of a host project, NATed by the host project's gateway, used by
      //    a service project's VM. 6. A peered network's VM is not NATed by cloudrun-vpc's gateway.
      //    7. A VM with a NIC in each: each NIC is NATed by its own network's gateway.
      let other = try await admin.with { client, options -> (Hostnat_V1_Instance, Hostnat_V1_Instance, Hostnat_V1_Instance) in
        _ = try await client.createProject(.with { $0.project = .with { $0.id = "host-proj"; $0.sharedVpcHost = true } }, options: options)
        _ = try await client.createProject(.with { $0.project = .with { $0.id = "svc-proj"; $0.sharedVpcHostProject = "host-proj" } }, options: options)
        _ = try await client.createNetwork(.with { $0.network.name = "shared-vpc"; $0.network.project = "host-proj" }, options: options)
        _ = try await client.createSubnet(.with {
          $0.subnet = .with { $0.name = "shared-subnet"; $0.network = "shared-vpc"; $0.region = region; $0.ipCidrRange = "10.20.0.0/24"; $0.project = "host-proj" }
        }, options: options)
        _ = try await client.createAddress(.with { $0.address = .with { $0.name = "shared-ip"; $0.region = region; $0.address = "203.0.113.20" } }, options: options)
        _ = try await client.createRouter(.with {
          $0.router = .with { $0.name = "shared-router"; $0.network = "shared-vpc"; $0.region = region; $0.project = "host-proj" }
        }, options: options)
        _ = try await client.createNat(.with {
          $0.region = region
          $0.router = "shared-router"
          $0.nat = .with { $0.name = "shared-nat"; $0.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges; $0.natIpAllocateOption = .manualOnly; $0.natIps = ["shared-ip"] }
        }, options: options)
        let svc = try await client.createInstance(.with {
          $0.instance = .with { $0.name = "svc-vm"; $0.host = host; $0.project = "svc-proj"; $0.networkInterfaces = [.with { $0.subnet = "shared-subnet" }] }
        }, options: options)
        _ = try await client.createNetwork(.with { $0.network.name = "peer-vpc" }, options: options)
        _ = try await client.createSubnet(.with {
          $0.subnet = .with { $0.name = "peer-subnet"; $0.network = "peer-vpc"; $0.region = region; $0.ipCidrRange = "10.30.0.0/24" }
        }, options: options)
        _ = try await client.updateNetwork(.with { $0.network.name = "cloudrun-vpc"; $0.network.peerNetworks = ["peer-vpc"]; $0.updateMask = ["peer_networks"] }, options: options)
        let peer = try await client.createInstance(.with {
          $0.instance = .with { $0.name = "peer-vm"; $0.host = host; $0.networkInterfaces = [.with { $0.subnet = "peer-subnet" }] }
        }, options: options)
        let twoNIC = try await client.createInstance(.with {
          $0.instance = .with { $0.name = "two-nic-vm"; $0.host = host; $0.networkInterfaces = [.with { $0.subnet = "cloudrun-direct-subnet" }, .with { $0.subnet = "shared-subnet" }] }
        }, options: options)
        return (svc, peer, twoNIC)
      }
      try await converge()
      let ips = [other.0, other.1, other.2].flatMap { vm in vm.networkInterfaces.map { "\(vm.name)/\($0.name)=\($0.networkIp)" } }
      func source(_ vm: Hostnat_V1_Instance, _ nic: Int) throws -> IPv4Address {
        guard let ip = IPv4Address(vm.networkInterfaces[nic].networkIp) else { throw LabError("\(vm.name) nic\(nic) has no IP") }
        return ip
      }
      let noNATBefore = global()?.noNATConfigured ?? 0
      let requests = [
        WhoamiProbe.Request(label: "svc-vm", source: try source(other.0, 0), host: host, server: echo10),
        WhoamiProbe.Request(label: "peer-vm", source: try source(other.1, 0), host: host, server: echo10),
        WhoamiProbe.Request(label: "two-nic-vm nic0", source: try source(other.2, 0), host: host, server: echo10),
        WhoamiProbe.Request(label: "two-nic-vm nic1", source: try source(other.2, 1), host: host, server: echo10),
      ]
      let more = try await WhoamiProbe.run(requests, state: state)
      for r in requests { probes.append(.init(probe: "projects, peering, NICs: whoami 192.0.2.10 from \(r.label) (\(r.source))", seen_from: (more[r.label] ?? []).sorted())) }
      let noNAT = (global()?.noNATConfigured ?? 0) - noNATBefore
      checks.add(
        "a service project's VM is NATed by its Shared VPC host project's gateway", more["svc-vm"] == ["203.0.113.20"],
        "svc-vm (project svc-proj, network shared-vpc of host-proj) saw \((more["svc-vm"] ?? []).sorted())")
      checks.add(
        "peering does not carry NAT", more["peer-vm"] == [] && noNAT > 0,
        "peer-vm (peer-vpc, peered with cloudrun-vpc) answered from \((more["peer-vm"] ?? []).sorted()) (nothing expected); \(noNAT) packets dropped as NO_NAT_CONFIGURED")
      checks.add(
        "each NIC is NATed by its own network's gateway", more["two-nic-vm nic0"] == [natIP] && more["two-nic-vm nic1"] == ["203.0.113.20"],
        "nic0 saw \((more["two-nic-vm nic0"] ?? []).sorted()), nic1 saw \((more["two-nic-vm nic1"] ?? []).sorted()) (\(ips.joined(separator: ", ")))")
    } catch {
      checks.add("scenario ran to the end", false, "\(error)")
    }
    try? await lab.down()
    let list = checks.list
    let passed = !list.isEmpty && list.allSatisfy(\.passed)
    lab.say("\n\(passed ? "PASSED" : "FAILED"): \(list.filter(\.passed).count)/\(list.count) checks held")
    return VPCEdgesReport(scenario: name, passed: passed, checks: list, probes: probes, dir: lab.dir)
  }
}
