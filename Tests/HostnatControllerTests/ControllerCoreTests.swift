import Foundation
import HostnatController
import HostnatPlanner
import HostnatProto
import SwiftProtobuf
import Testing

/// One admin change = one transaction; restarts keep every VM's ports; only affected hosts get
/// a new version; refused changes change nothing.
@Suite struct ControllerCoreTests {
  final class Clock: @unchecked Sendable {
    var ms: Int64 = 1_000
  }

  func core(_ dir: borrowing TempDir, clock: Clock) throws -> ControllerCore {
    let store = try ControllerStore(directory: dir.path)
    let now: MillisecondClock = { clock.ms }
    return try ControllerCore(
      store: store,
      hosts: HostControlService(store: store, registry: SessionRegistry(), nowMs: now),
      edge: EdgeControlService(store: store, registry: SessionRegistry(), nowMs: now),
      autoPools: ["us-east1": ["198.51.100.1", "198.51.100.2"]], nowMs: now)
  }

  @discardableResult
  func seed(_ core: ControllerCore) throws -> ChangeOutcome {
    let seed = IntentMappingTests().seedIntent()
    return try core.change { $0 = seed }
  }

  @Test func changeCommitsIntentAllocationsAndVersions() throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    let outcome = try seed(core)
    #expect(outcome.hostVersions.keys.sorted() == ["host-a", "host-b"])
    #expect(outcome.edgeVersion != nil)
    let stored = try core.store.read { reader in
      (try reader.hostConfig("host-a"), try reader.liveAllocations(), try reader.resources(.instance, as: Hostnat_V1_Instance.self))
    }
    #expect(stored.0?.version == outcome.hostVersions["host-a"])
    #expect(stored.0?.vms.map(\.instance) == ["vm-1"])
    #expect(stored.1.map(\.instance) == ["vm-1"])
    #expect(stored.1.first?.host == "host-a")
    #expect(stored.1.first?.grantedMs == 1_000)
    #expect(stored.2.map(\.name) == ["vm-1", "vm-2"])
  }

  @Test func restartKeepsPortsAndOnlyAffectedHostsGetVersions() throws {
    let dir = TempDir()
    let clock = Clock()
    let before: [NicNatAllocation]
    do {
      let first = try core(dir, clock: clock)
      try seed(first)
      before = first.planner.allocations(instance: "vm-1")
    }
    let restarted = try core(dir, clock: clock)
    #expect(restarted.planner.allocations(instance: "vm-1") == before)
    #expect(restarted.intent == IntentMappingTests().seedIntent())

    clock.ms = 2_000
    let outcome = try restarted.change { intent in
      intent.instances.append(.with {
        $0.name = "vm-3"
        $0.host = "host-a"
        $0.networkInterfaces = [.with { $0.subnet = "subnet-1"; $0.networkIp = "10.240.0.3" }]
      })
    }
    #expect(outcome.hostVersions.keys.sorted() == ["host-a"], "host-b's VMs did not change")
    #expect(restarted.planner.allocations(instance: "vm-1") == before, "adding a VM never moves another's ports")
    let vm3 = restarted.planner.allocations(instance: "vm-3")
    #expect(vm3.first?.numTotalNatPorts == 64)
    #expect(Set(vm3.flatMap(\.natIpPortRanges)).isDisjoint(with: before.flatMap(\.natIpPortRanges)))
  }

  @Test func refusedChangeChangesNothing() throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    try seed(core)
    let counter = try core.store.read { try $0.versionCounter() }
    let intent = core.intent
    #expect {
      try core.change { intent in
        intent.routers[0].nats[0].enableDynamicPortAllocation = true
        intent.routers[0].nats[0].enableEndpointIndependentMapping = true
      }
    } throws: { error in
      guard let error = error as? AdminError else { return false }
      return error.kind == .invalidArgument && error.field.contains("nat-gw-us-east")
    }
    #expect(core.intent == intent)
    #expect(try core.store.read { try $0.versionCounter() } == counter)
    #expect(try core.store.read { try $0.resources(.router, as: Hostnat_V1_Router.self) } == intent.routers)
  }

  /// Deleting a VM releases its block in the history, which still answers who had it.
  @Test func deletedVMStaysInWhoHadHistory() throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    try seed(core)
    let block = try #require(core.planner.allocations(instance: "vm-1").first?.natIpPortRanges.first)
    clock.ms = 5_000
    let outcome = try core.change { intent in intent.instances.removeAll { $0.name == "vm-1" } }
    #expect(outcome.hostVersions["host-a"] != nil, "host-a's last VM left: it gets an empty config")
    #expect(try core.store.read { try $0.hostConfig("host-a") }?.vms.isEmpty == true)
    let then = try core.store.read { try $0.allocations(holding: "\(block.natIp)", port: block.firstPort, atMs: 2_000) }
    #expect(then.map(\.instance) == ["vm-1"])
    #expect(then.first?.releasedMs == 5_000)
    #expect(try core.store.read { try $0.allocations(holding: "\(block.natIp)", port: block.firstPort, atMs: 6_000) }.isEmpty)
  }
}
