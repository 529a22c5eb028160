import HostnatAddressing
import Foundation
import HostnatAgent
import HostnatContracts
import HostnatDataplane
import HostnatEngine
import HostnatPackets
import HostnatProto
import SwiftProtobuf
import HostnatControlRules
import Testing

/// A host snapshot like the controller's: one gateway, vm-1 NATed with one block, vm-2 without NAT.
func snapshot(version: UInt64, host: String = "host-1", blockStart: UInt32 = 1024, natIP: String = "203.0.113.1") -> Hostnat_V1_HostConfig {
  .with {
    $0.hostID = host
    $0.version = version
    $0.gateways = [.with {
      $0.key = "us-east1/router-1/nat-1"
      $0.region = "us-east1"
      $0.router = "router-1"
      $0.name = "nat-1"
      $0.endpointIndependentMapping = true
      $0.timeouts = .with { $0.udpIdleTimeoutSec = 45 }
      $0.logConfig = .with { $0.enable = true; $0.filter = .errorsOnly }
    }]
    $0.vms = [
      .with {
        $0.instance = "vm-1"
        $0.nics = [.with {
          $0.name = "nic0"
          $0.primaryIp = "10.240.0.2"
          $0.natBindings = [.with {
            $0.gateway = "us-east1/router-1/nat-1"
            $0.natSources = [.with { $0.ipCidrRange = "10.240.0.2/32"; $0.primary = true }]
            $0.portBlocks = [
              .with { $0.natIp = natIP; $0.firstPort = blockStart; $0.count = 64 },
              .with { $0.natIp = "203.0.113.2"; $0.firstPort = 2048; $0.count = 64; $0.drained = true },
            ]
          }]
        }]
      },
      .with { $0.instance = "vm-2"; $0.nics = [.with { $0.name = "nic0"; $0.primaryIp = "172.16.0.2" }] },
    ]
  }
}

func tempDir() -> String {
  let path = NSTemporaryDirectory() + "hostnat-agent-\(UUID().uuidString)"
  try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  return path
}

let loopbackAny = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0)

@Suite struct ConfigTranslationTests {
  @Test func snapshotBecomesEngineConfig() throws {
    let config = try ConfigTranslation.engineConfig(snapshot(version: 3))
    #expect(config.vms.count == 2)
    let vm1 = try #require(config.vms.first { $0.id == "vm-1" })
    #expect(vm1.primaryIP == IPv4Address(10, 240, 0, 2))
    #expect(vm1.natSourceRanges == [IPv4CIDR("10.240.0.2/32")!])
    #expect(vm1.portBlocks == [
      PortBlock(natIP: IPv4Address(203, 0, 113, 1), ports: 1024..<1088),
      PortBlock(natIP: IPv4Address(203, 0, 113, 2), ports: 2048..<2112),
    ])
    #expect(vm1.gateway.drainedNatIPs == [IPv4Address(203, 0, 113, 2)])
    #expect(vm1.gateway.timeouts.udp == .seconds(45))
    #expect(vm1.gateway.timeouts.tcpEstablished == .seconds(1200), "0 means Cloud NAT's default")
    #expect(vm1.gateway.logging == LoggingConfig(enabled: true, filter: .errorsOnly))
    let vm2 = try #require(config.vms.first { $0.id == "vm-2" })
    #expect(vm2.portBlocks.isEmpty && vm2.natSourceRanges.isEmpty, "a subnet without NAT gets nothing")
  }

  /// The VPC around the VMs: firewall rules, routes and the Google APIs range of their network,
  /// the NIC's Private Google Access, and NAT rules with their blocks.
  @Test func networkPolicyAndNatRulesBecomeEngineConfig() throws {
    var host = snapshot(version: 4)
    host.vms[0].nics[0].network = "vpc"
    host.vms[0].nics[0].privateGoogleAccess = true
    host.vms[1].nics[0].network = "vpc"
    host.firewallRules = [
      .with {
        $0.name = "deny-dns"
        $0.network = "vpc"
        $0.direction = .egress
        $0.priority = 900
        $0.rules = [.with { $0.ipProtocol = "udp"; $0.ports = ["53", "5353-5354"] }]
        $0.destinationRanges = ["192.0.2.0/24"]
        $0.enableLogging = true
      },
      .with {
        $0.name = "ssh-in"; $0.network = "vpc"; $0.direction = .ingress; $0.allow = true; $0.rules = [.with { $0.ipProtocol = "tcp"; $0.ports = ["22"] }]
        $0.sourceRanges = ["198.51.100.0/24"]; $0.targetTags = ["bastion"]
      },
      .with { $0.name = "elsewhere"; $0.network = "other"; $0.allow = true },
    ]
    host.vms[0].tags = ["bastion", "blue"]
    host.routes = [.with { $0.name = "via-vm"; $0.network = "vpc"; $0.destRange = "198.51.100.0/26"; $0.priority = 1000; $0.nextHop.instance = "vm-9" }]
    host.googleApisRanges = ["vpc": "198.51.100.8/30"]
    host.vpcNetworks = [
      .with { $0.network = "vpc"; $0.id = 3; $0.internalRanges = ["10.240.0.0/20", "10.50.0.0/24"] },
      .with { $0.network = "other"; $0.id = 4; $0.internalRanges = ["10.240.0.0/20"] },
    ]
    host.gateways[0].rules = [.with { $0.ruleNumber = 100; $0.destinationRanges = ["192.0.2.20/32"] }]
    host.vms[0].nics[0].natBindings[0].portBlocks.append(.with { $0.natIp = "203.0.113.3"; $0.firstPort = 1024; $0.count = 64; $0.ruleNumber = 100 })

    let config = try ConfigTranslation.engineConfig(host)
    #expect(Set(config.networks.keys) == ["vpc"], "only networks the host's VMs are in")
    let policy = try #require(config.networks["vpc"])
    #expect(policy.firewallRules == [
      FirewallRule(
        name: "deny-dns", direction: .egress, priority: 900, allow: false, matches: [FirewallMatch(protocolNumber: 17, ports: [53...53, 5353...5354])],
        ranges: [IPv4CIDR("192.0.2.0/24")!], logging: true),
      FirewallRule(
        name: "ssh-in", direction: .ingress, priority: 0, allow: true, matches: [FirewallMatch(protocolNumber: 6, ports: [22...22])],
        ranges: [IPv4CIDR("198.51.100.0/24")!], targetTags: ["bastion"]),
    ])
    #expect(policy.routes == [CustomRoute(name: "via-vm", destination: IPv4CIDR("198.51.100.0/26")!, priority: 1000, nextHop: .instance("vm-9"))])
    #expect(policy.googleAPIsRanges == [IPv4CIDR("198.51.100.8/30")!])
    #expect(policy.internalRanges == [IPv4CIDR("10.240.0.0/20")!, IPv4CIDR("10.50.0.0/24")!] && policy.fabricID == 3)
    let vm1 = try #require(config.vms.first { $0.id == "vm-1" })
    #expect(vm1.network == "vpc" && vm1.privateGoogleAccess && vm1.tags == ["bastion", "blue"])
    #expect(vm1.gateway.rules == [NATRuleDestinations(ruleNumber: 100, destinations: [IPv4CIDR("192.0.2.20/32")!])])
    #expect(vm1.portBlocks.last == PortBlock(natIP: IPv4Address(203, 0, 113, 3), ports: 1024..<1088, ruleNumber: 100))
    #expect(config.vms.first { $0.id == "vm-2" }?.privateGoogleAccess == false)
    // The engine takes it: a policy the translation produced is one the engine accepts.
    let engine = try NATEngine(capacity: 64, config: config)
    #expect(engine.capacity == 64)
  }

  @Test(arguments: [
    ("fwproto", "firewallRules[r].ipProtocol"),
    ("fwports", "firewallRules[r].ports"),
    ("fwrange", "firewallRules[r]"),
    ("route", "routes[x].destRange"),
    ("hop", "routes[x].nextHop"),
    ("google", "googleApisRanges[vpc]"),
    ("rule", "rules[7].destinationRanges"),
    ("vpcrange", "vpcNetworks[vpc].internalRanges"),
    ("vpcid", "vpcNetworks[vpc].id"),
    ("vpcdup", "is also vpc's"),
  ])
  func badPoliciesAreRejectedWithTheField(breakage: String, expected: String) {
    var config = snapshot(version: 1)
    config.vms[0].nics[0].network = "vpc"
    switch breakage {
    case "fwproto": config.firewallRules = [.with { $0.name = "r"; $0.network = "vpc"; $0.rules = [.with { $0.ipProtocol = "bogus" }] }]
    case "fwports": config.firewallRules = [.with { $0.name = "r"; $0.network = "vpc"; $0.rules = [.with { $0.ipProtocol = "tcp"; $0.ports = ["80-"] }] }]
    case "fwrange": config.firewallRules = [.with { $0.name = "r"; $0.network = "vpc"; $0.sourceRanges = ["not-a-range"] }]
    case "route": config.routes = [.with { $0.name = "x"; $0.network = "vpc"; $0.destRange = "300.0.0.0/8"; $0.nextHop.defaultInternetGateway = true }]
    case "hop": config.routes = [.with { $0.name = "x"; $0.network = "vpc"; $0.destRange = "10.0.0.0/8" }]
    case "google": config.googleApisRanges = ["vpc": "x"]
    case "vpcrange": config.vpcNetworks = [.with { $0.network = "vpc"; $0.id = 1; $0.internalRanges = ["10.0.0.0/33"] }]
    case "vpcid": config.vpcNetworks = [.with { $0.network = "vpc"; $0.id = 0x10_0000 }]
    case "vpcdup": config.vpcNetworks = [.with { $0.network = "vpc"; $0.id = 2 }, .with { $0.network = "other"; $0.id = 2 }]
    default: config.gateways[0].rules = [.with { $0.ruleNumber = 7; $0.destinationRanges = ["1.2.3.4/40"] }]
    }
    do {
      _ = try ConfigTranslation.engineConfig(config)
      Issue.record("accepted a bad \(breakage)")
    } catch {
      #expect(error.reason.contains(expected), "\(error.reason)")
    }
  }

  @Test(arguments: [
    ("primary", "vms[vm-1].primaryIp"),
    ("gateway", "natBindings.gateway"),
    ("cidr", "natSources"),
    ("port", "outside 1024-65535"),
    ("natip", "portBlocks.natIp"),
    ("dupgateway", "listed twice"),
  ])
  func badSnapshotsAreRejectedWithTheField(breakage: String, expected: String) {
    var config = snapshot(version: 1)
    switch breakage {
    case "primary": config.vms[0].nics[0].primaryIp = "10.240.0"
    case "gateway": config.vms[0].nics[0].natBindings[0].gateway = "nope"
    case "cidr": config.vms[0].nics[0].natBindings[0].natSources[0].ipCidrRange = "10.0.0.0/33"
    case "port": config.vms[0].nics[0].natBindings[0].portBlocks[0].firstPort = 65500
    case "natip": config.vms[0].nics[0].natBindings[0].portBlocks[0].natIp = "x"
    default: config.gateways.append(config.gateways[0])
    }
    #expect(throws: ConfigRejection.self) { try ConfigTranslation.engineConfig(config) }
    do {
      _ = try ConfigTranslation.engineConfig(config)
    } catch {
      #expect(error.reason.contains(expected), "\(error.reason)")
    }
  }
}

@Suite struct StateFileTests {
  @Test func roundTripAndReplace() throws {
    let dir = tempDir()
    let file = StateFile<Hostnat_V1_HostConfig>(path: dir + "/config.pb")
    #expect(try file.load() == nil)
    try file.store(snapshot(version: 1))
    try file.store(snapshot(version: 2))
    #expect(try file.load() == snapshot(version: 2))
    #expect(!FileManager.default.fileExists(atPath: dir + "/config.pb.tmp"), "the temporary file is renamed away")
  }

  @Test func garbageIsAnErrorNotAnEmptyConfig() throws {
    let dir = tempDir()
    #expect(FileManager.default.createFile(atPath: dir + "/config.pb", contents: Data([0xFF, 0xFF, 0xFF, 0x07])))
    #expect(throws: StateFileError.self) { try StateFile<Hostnat_V1_HostConfig>(path: dir + "/config.pb").load() }
  }
}

/// The agent's side of control.proto's rules 1–3, driven directly (no controller needed).
@Suite struct AgentPushTests {
  func agent(_ dir: String) throws -> HostAgent {
    try HostAgent(options: AgentOptions(hostID: "host-1", controller: "127.0.0.1:1", underlay: loopbackAny, stateDir: dir, edge: nil))
  }

  func push(_ config: Hostnat_V1_HostConfig, nonce: String = UUID().uuidString) -> Hostnat_V1_ConfigPush {
    .with { $0.nonce = nonce; $0.config = config }
  }

  /// Control.proto rule 1 at the host: an equal (epoch, version) with other content is refused,
  /// a higher epoch wins over any version of a lower one.
  @Test func digestMismatchAndEpochsDecide() throws {
    let dir = tempDir()
    let agent = try agent(dir)
    defer { agent.stop() }
    var held = snapshot(version: 5)
    held.epoch = 2
    held.digest = ConfigDigest.of(held)
    #expect(agent.handlePush(push(held)).ack.version == 5)
    var other = snapshot(version: 5, blockStart: 4096)
    other.epoch = 2
    other.digest = ConfigDigest.of(other)
    let mismatch = agent.handlePush(push(other))
    #expect(mismatch.nack.error.hasPrefix("digest mismatch"), "\(mismatch.nack.error)")
    var older = snapshot(version: 900)
    older.epoch = 1
    #expect(agent.handlePush(push(older)).nack.error.hasPrefix("stale epoch 1 version 900"))
    var newer = snapshot(version: 1, blockStart: 4096)
    newer.epoch = 3
    newer.digest = ConfigDigest.of(newer)
    let applied = agent.handlePush(push(newer))
    #expect(applied.ack.version == 1 && applied.ack.epoch == 3 && applied.ack.digest == newer.digest)
  }

  /// Rule 8, lease mode: silent for the lease minus the margin, the host stops new mappings; for
  /// the lease, it ends its flows and reports its blocks fenced; only a push lifts the fence.
  @Test func leaseModeFencesAndOnlyAPushLiftsIt() throws {
    let dir = tempDir()
    let agent = try agent(dir)
    defer { agent.stop() }
    var config = snapshot(version: 5)
    config.fencingMode = .lease
    config.ownershipLeaseSec = 10
    config.fenceMarginSec = 3
    #expect(agent.handlePush(push(config)).ack.version == 5)
    agent.link.update { $0.lastMessageMs = 1_000_000 }
    agent.enforceLease(config, now: 1_000_000 + 6_999)
    #expect(agent.link.status.fencing == "")
    agent.enforceLease(config, now: 1_000_000 + 7_000)
    #expect(agent.link.status.fencing == "no-new-mappings")
    #expect(agent.hello().hello.blocks.allSatisfy { $0.state != .blockFenced })
    agent.enforceLease(config, now: 1_000_000 + 10_000)
    #expect(agent.link.status.fencing == "fenced")
    let hello = agent.hello().hello
    #expect(hello.fenced && hello.blocks.count == 2 && hello.blocks.allSatisfy { $0.state == .blockFenced })
    // Hearing the controller again does not lift it by itself (a heartbeat, later ticks)...
    agent.link.update { $0.lastMessageMs = 1_000_000 + 20_000 }
    agent.enforceLease(config, now: 1_000_000 + 20_001)
    #expect(agent.link.status.fencing == "fenced")
    // ...the controller's answer to the hello does.
    #expect(agent.handlePush(push(config)).ack.version == 5)
    #expect(agent.link.status.fencing == "")
    #expect(agent.hello().hello.blocks.allSatisfy { $0.state != .blockFenced })
  }

  @Test func versionsAckNackAndLastGoodConfig() throws {
    let dir = tempDir()
    do {
      let agent = try agent(dir)
      defer { agent.stop() }
      let first = agent.handlePush(push(snapshot(version: 5), nonce: "n1"))
      #expect(first.ack.nonce == "n1" && first.ack.version == 5)
      #expect(agent.dataplane.stats().appliedVersion == 5)

      let again = agent.handlePush(push(snapshot(version: 5), nonce: "n2"))
      #expect(again.ack.version == 5, "the version it holds is ACKed without change")

      let stale = agent.handlePush(push(snapshot(version: 4), nonce: "n3"))
      #expect(stale.nack.error == "stale epoch 0 version 4 < epoch 0 version 5")
      #expect(stale.nack.appliedVersion == 5)

      var bad = snapshot(version: 6)
      bad.vms[0].nics[0].natBindings[0].portBlocks[0].natIp = "not-an-ip"
      let rejected = agent.handlePush(push(bad, nonce: "n4"))
      #expect(rejected.nack.nonce == "n4" && rejected.nack.error.contains("natIp"))
      #expect(agent.dataplane.stats().appliedVersion == 5, "the previous config stays in force")

      var overlapping = snapshot(version: 7)
      overlapping.vms[1].nics[0].natBindings = overlapping.vms[0].nics[0].natBindings
      overlapping.vms[1].nics[0].natBindings[0].natSources = [.with { $0.ipCidrRange = "172.16.0.2/32" }]
      let engineRejected = agent.handlePush(push(overlapping, nonce: "n5"))
      #expect(engineRejected.nack.nonce == "n5", "the engine refuses two VMs on one block")
      #expect(agent.dataplane.stats().appliedVersion == 5)

      let wrongHost = agent.handlePush(push(snapshot(version: 8, host: "host-2")))
      #expect(wrongHost.nack.error.contains("host-2"))
      #expect(agent.link.status.nacks == 4 && agent.link.status.acks == 2)
    }
    // Restart on the same state dir: the last good config (v5) is in force before any controller.
    let restarted = try agent(dir)
    defer { restarted.stop() }
    #expect(restarted.link.status.appliedVersion == 5)
    #expect(restarted.dataplane.stats().appliedVersion == 5)
    #expect(restarted.flowTableAttached, "the flow table file is reattached")
    let stale = restarted.handlePush(push(snapshot(version: 3)))
    #expect(stale.nack.error == "stale epoch 0 version 3 < epoch 0 version 5", "versions survive the restart")
  }
}
