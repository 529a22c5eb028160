import HostnatAddressing
import Foundation
import GRPCCore
import GRPCInProcessTransport
import HostnatController
import HostnatDesiredState
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

  func core(_ dir: borrowing TempDir, clock: Clock, fencing: FencingPolicy = FencingPolicy()) throws -> ControllerCore {
    let store = try ControllerStore(directory: dir.path)
    let now: MillisecondClock = { clock.ms }
    return try ControllerCore(
      store: store,
      sessions: ControlSessions(),
      autoPools: ["us-east1": ["198.51.100.1", "198.51.100.2"]], fencing: fencing, nowMs: now)
  }

  @discardableResult
  func seed(_ core: ControllerCore) async throws -> ChangeOutcome {
    let seed = IntentMappingTests().seedIntent()
    return try await core.change { $0 = seed }
  }

  @Test func changeCommitsIntentAllocationsAndVersions() async throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    let outcome = try await seed(core)
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

  @Test func restartKeepsPortsAndOnlyAffectedHostsGetVersions() async throws {
    let dir = TempDir()
    let clock = Clock()
    let before: [NICNATAllocation]
    do {
      let first = try core(dir, clock: clock)
      try await seed(first)
      before = first.planner.allocations(instance: "vm-1")
    }
    let restarted = try core(dir, clock: clock)
    #expect(restarted.planner.allocations(instance: "vm-1") == before)
    var expected = IntentMappingTests().seedIntent()
    // The controller gave each network a fabric id at creation (kept for the network's life).
    for i in expected.networks.indices { expected.networks[i].fabricID = UInt32(i + 1) }
    #expect(restarted.intent == expected)
    #expect(restarted.startEpoch == 2, "every start is a new epoch")

    clock.ms = 2_000
    let outcome = try await restarted.change { intent in
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

  @Test func refusedChangeChangesNothing() async throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    try await seed(core)
    let counter = try core.store.read { try $0.versionCounter() }
    let intent = core.intent
    await #expect {
      try await core.change { intent in
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
  @Test func deletedVMStaysInWhoHadHistory() async throws {
    let dir = TempDir()
    let clock = Clock()
    let core = try core(dir, clock: clock)
    try await seed(core)
    let block = try #require(core.planner.allocations(instance: "vm-1").first?.natIpPortRanges.first)
    clock.ms = 5_000
    let outcome = try await core.change { intent in intent.instances.removeAll { $0.name == "vm-1" } }
    #expect(outcome.hostVersions["host-a"] != nil, "host-a's last VM left: it gets an empty config")
    #expect(try core.store.read { try $0.hostConfig("host-a") }?.vms.isEmpty == true)
    let then = try core.store.read { try $0.allocations(holding: "\(block.natIp)", port: block.firstPort, atMs: 2_000) }
    #expect(then.map(\.instance) == ["vm-1"])
    #expect(then.first?.releasedMs == 5_000)
    #expect(try core.store.read { try $0.allocations(holding: "\(block.natIp)", port: block.firstPort, atMs: 6_000) }.isEmpty)
  }
}

/// control.proto rule 5: a block taken from a VM goes to nobody else until its old host ACKed a
/// config without it, or the ownership lease ran out while the host was silent.
@Suite struct OwnershipRuleTests {
  /// One NAT IP that holds exactly one VM (32,768 ports: a single aligned block fits above 1024).
  func oneSlotIntent() -> StoredIntent {
    var intent = IntentMappingTests().seedIntent()
    intent.routers[0].nats[0].natIps = ["nat-ip-1"]
    intent.routers[0].nats[0].minPortsPerVm = 32_768
    return intent
  }

  @discardableResult
  func replaceVM(_ core: ControllerCore) async throws -> ChangeOutcome {
    try await core.change { intent in
      intent.instances.removeAll { $0.name == "vm-1" }
      intent.instances.append(.with {
        $0.name = "vm-3"
        $0.host = "host-c"
        $0.networkInterfaces = [.with { $0.subnet = "subnet-1"; $0.networkIp = "10.240.0.3" }]
      })
    }
  }

  @Test func blockWaitsForTheOldHostsAck() async throws {
    let dir = TempDir()
    let clock = ControllerCoreTests.Clock()
    let core = try ControllerCoreTests().core(dir, clock: clock)
    try await core.change { $0 = oneSlotIntent() }
    let block = try #require(core.planner.allocations(instance: "vm-1").first?.natIpPortRanges.first)

    let removal = try await replaceVM(core)
    let removedIn = try #require(removal.hostVersions["host-a"])
    #expect(core.planner.allocations(instance: "vm-3").allSatisfy { $0.natIpPortRanges.isEmpty }, "the block is quarantined")
    #expect(Array(core.pendingReleases.values) == ["host-a"])

    #expect(try await core.hostAcknowledged("host-a", version: removedIn - 1) == nil, "an older ACK proves nothing")
    #expect(try await core.hostAcknowledged("host-c", version: removedIn) == nil, "another host's ACK proves nothing")
    #expect(core.planner.allocations(instance: "vm-3").allSatisfy { $0.natIpPortRanges.isEmpty })

    let release = try #require(try await core.hostAcknowledged("host-a", version: removedIn))
    #expect(release.hostVersions["host-c"] != nil, "the waiting VM's host gets the block")
    #expect(core.planner.allocations(instance: "vm-3").first?.natIpPortRanges == [block])
    #expect(core.pendingReleases.isEmpty)
  }

  /// Fail-static (the default): a silent host may still be translating, so no lease ever frees
  /// its blocks; only its ACK or `hosts forget` does.
  @Test func failStaticNeverExpiresASilentHost() async throws {
    let dir = TempDir()
    let clock = ControllerCoreTests.Clock()
    let core = try ControllerCoreTests().core(dir, clock: clock)
    try await core.change { $0 = oneSlotIntent() }
    try await replaceVM(core)
    clock.ms += 365 * 86_400_000
    #expect(try await core.expireLeases() == nil)
    #expect(core.planner.allocations(instance: "vm-3").allSatisfy { $0.natIpPortRanges.isEmpty })
    let (released, warnings) = try await core.forgetHost("host-a")
    #expect(released == 1)
    #expect(warnings.isEmpty, "\(warnings)")
    #expect(core.planner.allocations(instance: "vm-3").first?.numTotalNatPorts == 32_768)
    #expect(core.pendingReleases.isEmpty)
  }

  @Test func leaseFreesBlocksOfASilentHost() async throws {
    let dir = TempDir()
    let clock = ControllerCoreTests.Clock()
    let core = try ControllerCoreTests().core(dir, clock: clock, fencing: FencingPolicy(mode: .lease))
    try await core.change { $0 = oneSlotIntent() }
    try await replaceVM(core)
    let lease = Int64(SnapshotBuilder.ownershipLeaseSec(core.planner)) * 1000
    #expect(lease > 1_200_000, "longer than the longest idle timeout")

    clock.ms += lease - 1
    #expect(try await core.expireLeases() == nil)
    #expect(core.planner.allocations(instance: "vm-3").allSatisfy { $0.natIpPortRanges.isEmpty })
    clock.ms += 1
    #expect(try await core.expireLeases() != nil)
    #expect(core.planner.allocations(instance: "vm-3").first?.numTotalNatPorts == 32_768)
  }

  /// A restart keeps the quarantine (it is in the planner's snapshot) and waits for the host's
  /// newest version.
  @Test func quarantineSurvivesRestart() async throws {
    let dir = TempDir()
    let clock = ControllerCoreTests.Clock()
    let removedIn: UInt64
    do {
      let core = try ControllerCoreTests().core(dir, clock: clock)
      try await core.change { $0 = oneSlotIntent() }
      removedIn = try #require(try await replaceVM(core).hostVersions["host-a"])
    }
    let restarted = try ControllerCoreTests().core(dir, clock: clock)
    #expect(Array(restarted.pendingReleases.values) == ["host-a"])
    #expect(restarted.planner.allocations(instance: "vm-3").allSatisfy { $0.natIpPortRanges.isEmpty })
    #expect(try await restarted.hostAcknowledged("host-a", version: removedIn) != nil)
    #expect(restarted.planner.allocations(instance: "vm-3").first?.numTotalNatPorts == 32_768)
  }
}

/// The whole loop over gRPC: the old host ACKs the config without the block, and the waiting VM
/// gets it — no test hook, just the control stream and ControllerCore.run.
@Suite(.timeLimit(.minutes(1)))
struct OwnershipOverTheWireTests {
  @Test func ackOverTheStreamReleasesTheBlock() async throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    let sessions = ControlSessions()
    let core = try ControllerCore(store: store, sessions: sessions, autoPools: [:])
    let hosts = HostControlService(store: store, registry: sessions.hosts, heartbeatInterval: .seconds(30), events: core)
    try await core.change { $0 = OwnershipRuleTests().oneSlotIntent() }
    let block = try #require(core.planner.allocations(instance: "vm-1").first?.natIpPortRanges.first)

    let transport = InProcessTransport()
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await core.run(leaseCheckInterval: .seconds(60)) }
      try await withGRPCServer(transport: transport.server, services: [hosts]) { _ in
        try await withGRPCClient(transport: transport.client) { client in
          let agent = ControlProtocolTests()
          try await agent.agentStream(client, hello: .with { $0.hostID = "host-a"; $0.bootID = "b" }) { message in
            guard case .push(let push)? = message.message else { return [] }
            if push.config.vms.contains(where: { $0.instance == "vm-1" }) {
              // The agent holds vm-1's block; now the operator replaces the VM.
              Task { try await OwnershipRuleTests().replaceVM(core) }
            }
            return [.with { $0.ack = .with { $0.nonce = push.nonce; $0.version = push.config.version } }]
          } until: {
            core.planner.allocations(instance: "vm-3").first?.natIpPortRanges == [block]
          }
        }
        hosts.registry.shutdown()
      }
      group.cancelAll()
    }
    #expect(core.planner.allocations(instance: "vm-3").first?.natIpPortRanges == [block])
    #expect(core.pendingReleases.isEmpty)
    let history = try store.read { try $0.allocations(holding: "\(block.natIp)", port: block.firstPort, atMs: Int64.max - 1) }
    #expect(history.map(\.instance) == ["vm-3"])
  }
}
