import HostnatAddressing
import Foundation
import HostnatController
import HostnatDesiredState
import HostnatPlanner
import HostnatProto
import SwiftProtobuf
import Testing

/// Dynamic port allocation through ControllerCore: a host's request doubles its VM's ports with
/// one durable, versioned change, up to the gateway's max; every other request is refused with
/// the reason and changes nothing; reclaimed blocks are quarantined.
@Suite struct PortGrantTests {
  func dynamicCore(_ dir: borrowing TempDir, maxPorts: UInt32 = 256) async throws -> ControllerCore {
    let store = try ControllerStore(directory: dir.path)
    let core = try ControllerCore(
      store: store, sessions: ControlSessions(), autoPools: [:])
    var intent = IntentMappingTests().seedIntent()
    intent.routers[0].nats[0].enableDynamicPortAllocation = true
    intent.routers[0].nats[0].enableEndpointIndependentMapping = false
    intent.routers[0].nats[0].minPortsPerVm = 64
    intent.routers[0].nats[0].maxPortsPerVm = maxPorts
    try await core.change { $0 = intent }
    return core
  }

  func request(_ instance: String = "vm-1", nic: String = "nic0", id: String = "r1") -> Hostnat_V1_PortRequest {
    .with {
      $0.requestID = id
      $0.instance = instance
      $0.nic = nic
      $0.portsAllocated = 64
    }
  }

  @Test func grantDoublesPortsUpToTheMaximum() async throws {
    let dir = TempDir()
    let core = try await dynamicCore(dir)
    let versionBefore = try core.store.read { try $0.hostConfig("host-a")?.version } ?? 0

    let first = await core.grantPorts(hostID: "host-a", request: request())
    #expect(first.refusedReason == "")
    #expect(first.requestID == "r1")
    #expect(first.block.count == 64 && first.block.natIp.hasPrefix("203.0.113."))
    #expect(first.version > versionBefore, "the grant is carried by a new version")
    let stored = try core.store.read { try $0.hostConfig("host-a") }
    #expect(stored?.version == first.version)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 128)
    // The allocation history knows the granted block (who-had answers for it).
    let holders = try core.store.read {
      try $0.allocations(holding: first.block.natIp, port: Int(first.block.firstPort), atMs: core.nowMsValue + 1)
    }
    #expect(holders.map(\.instance) == ["vm-1"])

    let second = await core.grantPorts(hostID: "host-a", request: request(id: "r2"))
    #expect(second.refusedReason == "" && second.block.count == 128)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 256)

    // A retried request (same id) gets the same answer and no second block or version.
    let versions = try core.store.read { try $0.versionCounter() }
    let retried = await core.grantPorts(hostID: "host-a", request: request(id: "r2"))
    #expect(retried == second)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 256)
    #expect(try core.store.read { try $0.versionCounter() } == versions)

    let atMax = await core.grantPorts(hostID: "host-a", request: request(id: "r3"))
    #expect(atMax.refusedReason.contains("maximum ports per VM"), "\(atMax.refusedReason)")
    #expect(!atMax.hasBlock)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 256)
  }

  @Test(arguments: [
    ("host-b", "vm-1", "nic0", "runs on host-a"),
    ("host-a", "vm-9", "nic0", "no NAT gateway translates"),
    ("host-b", "vm-2", "nic0", "no NAT gateway translates"),
    ("host-a", "vm-1", "eth0", "not a NIC name"),
  ])
  func refusalsSayWhyAndChangeNothing(host: String, instance: String, nic: String, reason: String) async throws {
    let dir = TempDir()
    let core = try await dynamicCore(dir)
    let versions = try core.store.read { try $0.versionCounter() }
    let grant = await core.grantPorts(hostID: host, request: request(instance, nic: nic))
    #expect(grant.refusedReason.contains(reason), "\(grant.refusedReason)")
    #expect(try core.store.read { try $0.versionCounter() } == versions)
  }

  @Test func staticGatewayRefusesGrants() async throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    let core = try ControllerCore(
      store: store, sessions: ControlSessions(), autoPools: [:])
    try await core.change { $0 = IntentMappingTests().seedIntent() }
    let grant = await core.grantPorts(hostID: "host-a", request: request())
    #expect(grant.refusedReason.contains("does not use dynamic port allocation"), "\(grant.refusedReason)")
  }

  @Test func reclaimShrinksAnIdleNicAndQuarantinesTheBlock() async throws {
    let dir = TempDir()
    let core = try await dynamicCore(dir)
    _ = await core.grantPorts(hostID: "host-a", request: request(id: "r1"))
    _ = await core.grantPorts(hostID: "host-a", request: request(id: "r2"))
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 256)
    let config = try #require(try core.store.read { try $0.hostConfig("host-a") })
    let blocks = config.vms.first { $0.instance == "vm-1" }?.nics.first?.natBindings.first?.portBlocks ?? []
    #expect(blocks.count == 3)
    func report(version: UInt64 = config.version, epoch: UInt64 = config.epoch, idle: [Hostnat_V1_PortBlock] = blocks) -> Hostnat_V1_PortUsageReport {
      .with {
        $0.appliedVersion = version
        $0.appliedEpoch = epoch
        $0.nics = [.with {
          $0.instance = "vm-1"
          $0.nic = "nic0"
          $0.portsAllocated = 256
          $0.portsInUse = 3
          $0.idleBlocks = idle
        }]
      }
    }
    // A report of an older config may miss flows made since: it is not acted on.
    #expect(try await core.reclaimPorts(hostID: "host-a", report: report(version: config.version - 1)) == nil)
    #expect(try await core.reclaimPorts(hostID: "host-a", report: report(epoch: config.epoch + 1)) == nil)
    // Blocks the host does not report idle are not taken (the planner would take the newest).
    #expect(try await core.reclaimPorts(hostID: "host-a", report: report(idle: Array(blocks.prefix(1)))) == nil)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 256)
    let report = report()
    // A report from another host does not touch vm-1.
    #expect(try await core.reclaimPorts(hostID: "host-b", report: report) == nil)
    let outcome = try #require(try await core.reclaimPorts(hostID: "host-a", report: report))
    #expect(outcome.hostVersions["host-a"] != nil)
    #expect(core.planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 64)
    #expect(!core.pendingReleases.isEmpty && core.pendingReleases.values.allSatisfy { $0 == "host-a" })
    // Nothing left to reclaim: no change, no version (and the report is now of an older config).
    #expect(try await core.reclaimPorts(hostID: "host-a", report: report) == nil)
  }
}
