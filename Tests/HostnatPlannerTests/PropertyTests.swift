import Testing

@testable import HostnatPlanner

/// Random sequences of changes over a few hundred VMs and three gateways (static manual with
/// drains and port changes, dynamic manual with grants and reclaims, auto with a small regional
/// pool), checking after every step that no NAT IP:port has two owners, that the NICs a change is
/// not about keep exactly their ports, and that the internal bookkeeping is consistent.
struct RandomWorld {
  var rng: SeededRandom
  var planner: NatPlanner
  var staticIps = [Fixture.ip(1), Fixture.ip(2)]
  var drained: [String] = []
  var staticMinPorts = 1024
  var autoPool = Fixture.ips(20..<22)
  /// What each step did, for the determinism check.
  var log: [String] = []
  /// VMs that were granted ports, so that reclaims mostly hit someone with something to give.
  var granted: [String] = []

  static let vmCount = 240

  init(seed: UInt64) throws {
    rng = SeededRandom(seed: seed)
    planner = try NatPlanner(intent: Self.intent(staticIps: staticIps, drained: [], minPorts: staticMinPorts, autoPool: autoPool))
  }

  static func intent(staticIps: [String], drained: [String], minPorts: Int, autoPool: [String]) -> NatIntent {
    var intent = Fixture.intent(autoPool: autoPool)
    intent.natGateways = gateways(staticIps: staticIps, drained: drained, minPorts: minPorts)
    return intent
  }

  static func gateways(staticIps: [String], drained: [String], minPorts: Int) -> [NatGateway] {
    [
      NatGateway(
        name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s1")],
        natIpAllocateOption: .manualOnly, natIps: staticIps, drainNatIps: drained, minPortsPerVm: minPorts),
      NatGateway(
        name: "dyn", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s2")],
        natIpAllocateOption: .manualOnly, natIps: [Fixture.ip(10)], minPortsPerVm: 64, maxPortsPerVm: 4096, enableDynamicPortAllocation: true),
      NatGateway(name: "auto", router: "rt2", minPortsPerVm: 4096),
    ]
  }

  /// VM i: subnet s1, s2 or (another network) t1, sometimes an alias range or an external IP.
  mutating func randomInstance(_ i: Int) -> Instance {
    let variant = Int.random(in: 0..<6, using: &rng)
    let third = i / 200
    let fourth = i % 200 + 2
    var nic: NetworkInterface
    switch variant {
    case 0, 1:
      nic = NetworkInterface(subnetwork: "s1", networkIP: "10.0.\(third).\(fourth)")
      if variant == 1 { nic.aliasIpRanges = [AliasIpRange(ipCidrRange: "10.100.\(i).0/28", subnetworkRangeName: "pods")] }
    case 2:
      nic = NetworkInterface(subnetwork: "s1", networkIP: "10.0.\(third).\(fourth)", externalIP: "198.51.100.\(i % 250 + 1)")
      if Bool.random(using: &rng) { nic.aliasIpRanges = [AliasIpRange(ipCidrRange: "10.100.\(i).16/28", subnetworkRangeName: "pods")] }
    case 3, 4:
      nic = NetworkInterface(subnetwork: "s2", networkIP: "10.1.\(third).\(fourth)")
    default:
      nic = NetworkInterface(subnetwork: "t1", networkIP: "10.0.\(third).\(fourth)")
    }
    return Instance(name: "vm\(i)", host: "h\(Int.random(in: 0..<4, using: &rng))", networkInterfaces: [nic])
  }

  enum Scope {
    /// Only this instance may change.
    case instance(String)
    /// Instances holding ports keep them exactly; waiting ones may gain ports.
    case waitingOnly
    /// NICs with a block on one of these NAT IPs may change; everyone else keeps their ports.
    case natIps(Set<String>)
    /// Every NIC of the gateway may change, but keeps the start of its first block.
    case gatewayPorts(String)
  }

  mutating func step() throws {
    let before = planner.allAllocations
    let roll = Int.random(in: 0..<100, using: &rng)
    let i = Int.random(in: 0..<Self.vmCount, using: &rng)
    let scope: Scope
    switch roll {
    case 0..<40:
      let instance = randomInstance(i)
      try planner.upsertInstance(instance)
      scope = .instance(instance.name)
      log.append("upsert \(instance)")
    case 40..<55:
      guard planner.recordIDs["vm\(i)"] != nil else { return }
      try planner.removeInstance("vm\(i)")
      scope = .instance("vm\(i)")
      log.append("remove vm\(i)")
    case 55..<65:
      let modulus = UInt64.random(in: 1...3, using: &rng)
      planner.releaseQuarantined { $0.id % modulus == 0 }
      scope = .waitingOnly
      log.append("release \(modulus)")
    case 65..<78:
      let outcome = planner.grant(NicRef(instance: "vm\(i)", gateway: "dyn"))
      if case .granted = outcome { granted.append("vm\(i)") }
      scope = .instance("vm\(i)")
      log.append("grant vm\(i) \(outcome)")
    case 78..<88:
      let usage = Bool.random(using: &rng) ? 0 : Int.random(in: 0..<300, using: &rng)
      let name = granted.randomElement(using: &rng) ?? "vm\(i)"
      let released = planner.reclaim(NicRef(instance: name, gateway: "dyn"), portsInUse: usage)
      scope = .instance(name)
      log.append("reclaim \(name) \(usage) \(released)")
    case 88..<96:
      scope = try changeStaticGateway()
    default:
      let add = autoPool.count < 4 || Bool.random(using: &rng)
      let previous = autoPool
      if add {
        autoPool.append(Fixture.ip(20 + autoPool.count))
      } else {
        autoPool.removeLast()
      }
      try planner.apply(.setAutoNatIpPool(AutoNatIpPool(region: "r1", natIps: autoPool)))
      scope = add ? .waitingOnly : .natIps(Set(previous).subtracting(autoPool))
      log.append("auto pool \(autoPool)")
    }
    try check(before: before, scope: scope)
  }

  /// Adds, removes, drains or undrains a NAT IP of "gw", or changes its port minimum.
  mutating func changeStaticGateway() throws -> Scope {
    let choice = Int.random(in: 0..<5, using: &rng)
    var scope: Scope
    switch choice {
    case 0:
      guard let free = (1..<7).map(Fixture.ip).first(where: { !staticIps.contains($0) && !drained.contains($0) }) else { return .waitingOnly }
      staticIps.append(free)
      scope = .waitingOnly
    case 1 where staticIps.count > 1:
      let ip = staticIps.remove(at: Int.random(in: 0..<staticIps.count, using: &rng))
      drained.append(ip)
      scope = .natIps([ip])
    case 2 where !drained.isEmpty:
      let ip = drained.removeFirst()
      staticIps.append(ip)
      scope = .natIps([ip])
    case 3 where !drained.isEmpty || staticIps.count > 1:
      let ip = drained.isEmpty ? staticIps.removeLast() : drained.removeLast()
      scope = .natIps([ip])
    default:
      staticMinPorts = [512, 1024, 2048].randomElement(using: &rng)!
      scope = .gatewayPorts("gw")
    }
    for gateway in Self.gateways(staticIps: staticIps, drained: drained, minPorts: staticMinPorts) {
      try planner.apply(.upsertNatGateway(gateway))
    }
    log.append("gw \(staticIps) drained \(drained) min \(staticMinPorts)")
    return scope
  }

  func check(before: [NicNatAllocation], scope: Scope) throws {
    let step = log.last ?? ""
    #expect(planner.overlaps.isEmpty, "\(planner.overlaps.prefix(3)) after \(step)")
    #expect(planner.consistencyViolations().isEmpty, "\(planner.consistencyViolations().prefix(3)) after \(step)")
    let after = Dictionary(uniqueKeysWithValues: planner.allAllocations.map { ($0.nic, $0) })
    var moved: [String] = []
    for old in before {
      let held = old.natIpPortRanges + old.drainNatIpPortRanges
      let new = after[old.nic]
      let newHeld = (new?.natIpPortRanges ?? []) + (new?.drainNatIpPortRanges ?? [])
      let unchanged = newHeld == held && new?.waitingForNatPorts == old.waitingForNatPorts
      switch scope {
      case .instance(let name):
        if old.nic.instance != name && !unchanged { moved.append("\(old.nic)") }
      case .waitingOnly:
        if old.waitingForNatPorts {
          if !Set(held).isSubset(of: newHeld) { moved.append("\(old.nic) lost ports") }
        } else if !unchanged {
          moved.append("\(old.nic)")
        }
      case .natIps(let ips):
        if !old.waitingForNatPorts && !held.contains(where: { ips.contains($0.natIp.description) }) && !unchanged {
          moved.append("\(old.nic)")
        }
      case .gatewayPorts(let gateway):
        guard !old.waitingForNatPorts else { continue }
        if old.nic.gateway != gateway {
          if !unchanged { moved.append("\(old.nic)") }
        } else if let new, new.numTotalNatPorts >= old.numTotalNatPorts {
          // Growing (or waiting to grow) keeps every block.
          if !Set(held).isSubset(of: newHeld) { moved.append("\(old.nic) lost a block while growing") }
        } else {
          // Shrinking only drops or halves blocks: what is left lies inside what was held, and
          // some block still starts where it did.
          let inside = newHeld.allSatisfy { range in held.contains { $0.natIp == range.natIp && $0.firstPort <= range.firstPort && range.lastPort <= $0.lastPort } }
          let kept = newHeld.contains { range in held.contains { $0.natIp == range.natIp && $0.firstPort == range.firstPort } }
          if !inside || !kept { moved.append("\(old.nic) moved while shrinking") }
        }
      }
    }
    #expect(moved.isEmpty, "\(moved.prefix(3)) changed after \(step)")
  }
}

@Suite struct PropertyTests {
  @Test(arguments: [1, 2, 3] as [UInt64])
  func randomChangesNeverShareOrMovePorts(seed: UInt64) throws {
    var world = try RandomWorld(seed: seed)
    for _ in 0..<1200 { try world.step() }
    // Something happened: VMs got ports and some waited, blocks were quarantined and released.
    #expect(world.planner.instanceCount > 50)
    #expect(world.log.contains { $0.hasPrefix("grant") && $0.contains("granted") })
    #expect(world.log.contains { $0.hasPrefix("reclaim") && !$0.hasSuffix("[]") })

    // A restarted controller plans the same intent on top of the snapshot: nothing moves.
    let restored = try NatPlanner(intent: world.planner.intent, restoring: world.planner.snapshot())
    #expect(restored.allAllocations == world.planner.allAllocations)
    #expect(restored.quarantinedBlocks == world.planner.quarantinedBlocks)
    #expect(restored.gatewayStatuses == world.planner.gatewayStatuses)
  }

  @Test func sameSequenceSameResult() throws {
    var first = try RandomWorld(seed: 42)
    var second = try RandomWorld(seed: 42)
    for _ in 0..<600 {
      try first.step()
      try second.step()
    }
    #expect(first.log == second.log)
    #expect(first.planner.snapshot() == second.planner.snapshot())
    #expect(first.planner.gatewayStatuses == second.planner.gatewayStatuses)
  }

  @Test func aFullReplanKeepsEveryAllocation() throws {
    var world = try RandomWorld(seed: 7)
    for _ in 0..<400 { try world.step() }
    let before = world.planner.allAllocations
    try world.planner.apply(world.planner.intent)
    #expect(world.planner.allAllocations.filter { !$0.waitingForNatPorts } == before.filter { !$0.waitingForNatPorts })
  }
}
