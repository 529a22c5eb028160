import HostnatAddressing
import HostnatTestSupport
import Testing

@testable import HostnatPlanner

/// Random sequences of changes over a few hundred VMs and three gateways (static manual with
/// drains, port changes and NAT rules that come and go, dynamic manual with grants and reclaims
/// and a fixed rule, auto with a small regional pool), checking after every step that no NAT
/// IP:port has two owners, that the NICs a change is not about keep exactly their ports (on the
/// default NAT IPs and on every rule's), and that the internal bookkeeping is consistent.
struct RandomWorld {
  var rng: SeededRNG
  var planner: NATPlanner
  var staticIps = [Fixture.ip(1), Fixture.ip(2)]
  var drained: [String] = []
  var staticMinPorts = 1024
  /// NAT rules of "gw" by rule number: few IPs, so that NICs often wait on a rule.
  var rules: [Int: (active: [String], drained: [String])] = [:]
  var autoPool = Fixture.ips(20..<22)
  /// What each step did, for the determinism check.
  var log: [String] = []
  /// VMs that were granted ports, so that reclaims mostly hit someone with something to give.
  var granted: [String] = []
  /// `planner.allAllocations` as of the last check (every change is checked), to compare the
  /// next step against without building them twice.
  var current: [NICNATAllocation] = []
  var sawRuleWaiting = false
  var sawRuleDrain = false

  static let vmCount = 240

  init(seed: UInt64) throws {
    rng = SeededRNG(seed: seed)
    planner = try NATPlanner(intent: Self.intent(staticIps: staticIps, drained: [], minPorts: staticMinPorts, rules: [:], autoPool: autoPool))
    current = planner.allAllocations
  }

  static func intent(staticIps: [String], drained: [String], minPorts: Int, rules: [Int: (active: [String], drained: [String])], autoPool: [String]) -> NATIntent {
    var intent = Fixture.intent(autoPool: autoPool)
    intent.natGateways = gateways(staticIps: staticIps, drained: drained, minPorts: minPorts, rules: rules)
    return intent
  }

  static func gateways(staticIps: [String], drained: [String], minPorts: Int, rules: [Int: (active: [String], drained: [String])]) -> [NATGateway] {
    [
      NATGateway(
        name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s1")],
        natIpAllocateOption: .manualOnly, natIps: staticIps, drainNatIps: drained, minPortsPerVm: minPorts,
        rules: rules.keys.sorted().map { Fixture.rule($0, rules[$0]!.active, drain: rules[$0]!.drained) }),
      NATGateway(
        name: "dyn", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s2")],
        natIpAllocateOption: .manualOnly, natIps: [Fixture.ip(10)], minPortsPerVm: 64, maxPortsPerVm: 4096, enableDynamicPortAllocation: true,
        rules: [Fixture.rule(1, [Fixture.ip(11)])]),
      NATGateway(name: "auto", router: "rt2", minPortsPerVm: 4096, rules: [Fixture.rule(1, [Fixture.ip(12)])]),
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
      if variant == 1 { nic.aliasIpRanges = [AliasIPRange(ipCidrRange: "10.100.\(i).0/28", subnetworkRangeName: "pods")] }
    case 2:
      nic = NetworkInterface(subnetwork: "s1", networkIP: "10.0.\(third).\(fourth)", externalIP: "198.51.100.\(i % 250 + 1)")
      if Bool.random(using: &rng) { nic.aliasIpRanges = [AliasIPRange(ipCidrRange: "10.100.\(i).16/28", subnetworkRangeName: "pods")] }
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
    /// Ports on this rule of "gw" may change, and NICs with a block on one of these NAT IPs;
    /// everyone else keeps their ports.
    case rule(Int, natIps: Set<String>)
  }

  mutating func step() throws {
    let before = current
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
      let outcome = planner.grant(NICRef(instance: "vm\(i)", gateway: "dyn"))
      if case .granted = outcome { granted.append("vm\(i)") }
      scope = .instance("vm\(i)")
      log.append("grant vm\(i) \(outcome)")
    case 78..<88:
      let usage = Bool.random(using: &rng) ? 0 : Int.random(in: 0..<300, using: &rng)
      let name = granted.randomElement(using: &rng) ?? "vm\(i)"
      let released = planner.reclaim(NICRef(instance: name, gateway: "dyn"), portsInUse: usage)
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
      try planner.apply(.setAutoNatIpPool(AutoNATIPPool(region: "r1", natIps: autoPool)))
      scope = add ? .waitingOnly : .natIps(Set(previous).subtracting(autoPool))
      log.append("auto pool \(autoPool)")
    }
    try check(before: before, scope: scope)
  }

  var ruleIps: Set<String> { Set(rules.values.flatMap { $0.active + $0.drained }) }

  /// Adds, removes, drains or undrains a NAT IP of "gw", or changes its port minimum; or adds,
  /// removes or changes one of its NAT rules.
  mutating func changeStaticGateway() throws -> Scope {
    let choice = Int.random(in: 0..<10, using: &rng)
    var scope: Scope
    switch choice {
    case 0:
      guard let free = (1..<7).map(Fixture.ip).first(where: { !staticIps.contains($0) && !drained.contains($0) && !ruleIps.contains($0) }) else {
        return .waitingOnly
      }
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
    case 5 where rules.count < 3:
      // A new rule with one IP: never enough for every NIC of "gw".
      let number = [10, 20, 30].first { rules[$0] == nil }!
      guard let free = Fixture.ips(30..<36).first(where: { !ruleIps.contains($0) }) else { return .waitingOnly }
      rules[number] = ([free], [])
      scope = .rule(number, natIps: [])
    case 6 where !rules.isEmpty:
      let number = rules.keys.sorted().randomElement(using: &rng)!
      rules[number] = nil
      scope = .rule(number, natIps: [])
    case 7 where !rules.isEmpty:
      // Another IP for a rule: a fresh one, or one taken from the gateway's default NAT IPs.
      let number = rules.keys.sorted().randomElement(using: &rng)!
      if staticIps.count > 1 && Bool.random(using: &rng) {
        let ip = staticIps.removeLast()
        rules[number]!.active.append(ip)
        scope = .rule(number, natIps: [ip])
      } else {
        guard let free = Fixture.ips(30..<36).first(where: { !ruleIps.contains($0) }) else { return .waitingOnly }
        rules[number]!.active.append(free)
        scope = .rule(number, natIps: [])
      }
    case 8 where !rules.isEmpty:
      // Drain, undrain or remove one of a rule's IPs.
      let number = rules.keys.sorted().randomElement(using: &rng)!
      var rule = rules[number]!
      let ip: String
      switch Int.random(in: 0..<3, using: &rng) {
      case 0 where !rule.active.isEmpty:
        ip = rule.active.remove(at: Int.random(in: 0..<rule.active.count, using: &rng))
        rule.drained.append(ip)
      case 1 where !rule.drained.isEmpty:
        ip = rule.drained.removeFirst()
        rule.active.append(ip)
      default:
        guard rule.active.count + rule.drained.count > 1 else { return .waitingOnly }
        ip = rule.drained.isEmpty ? rule.active.removeLast() : rule.drained.removeLast()
      }
      rules[number] = rule
      scope = .rule(number, natIps: [ip])
    default:
      staticMinPorts = [512, 1024, 2048].randomElement(using: &rng)!
      scope = .gatewayPorts("gw")
    }
    for gateway in Self.gateways(staticIps: staticIps, drained: drained, minPorts: staticMinPorts, rules: rules) {
      try planner.apply(.upsertNatGateway(gateway))
    }
    let ruleText = rules.keys.sorted().map { "\($0): \(rules[$0]!.active) drained \(rules[$0]!.drained)" }
    log.append("gw \(staticIps) drained \(drained) min \(staticMinPorts) rules \(ruleText)")
    return scope
  }

  /// One NIC's ports on one pool: the gateway's default NAT IPs (rule nil) or one rule's.
  struct Part: Hashable, CustomStringConvertible {
    var nic: NICRef
    var rule: Int?
    var description: String { rule.map { "\(nic) rule \($0)" } ?? "\(nic)" }
  }

  struct PartState: Equatable {
    var held: [NATPortRange]
    var waiting: Bool
    var activePorts: Int
  }

  static func parts(_ allocations: [NICNATAllocation]) -> [Part: PartState] {
    var result: [Part: PartState] = [:]
    for allocation in allocations {
      result[Part(nic: allocation.nic, rule: nil)] = PartState(
        held: allocation.natIpPortRanges + allocation.drainNatIpPortRanges, waiting: allocation.waitingForNatPorts,
        activePorts: allocation.numTotalNatPorts)
      for rule in allocation.ruleAllocations {
        result[Part(nic: allocation.nic, rule: rule.ruleNumber)] = PartState(
          held: rule.natIpPortRanges + rule.drainNatIpPortRanges, waiting: rule.waitingForNatPorts,
          activePorts: rule.natIpPortRanges.reduce(0) { $0 + $1.portCount })
      }
    }
    return result
  }

  mutating func check(before: [NICNATAllocation], scope: Scope) throws {
    let step = log.last ?? ""
    current = planner.allAllocations
    let overlaps = planner.overlaps(in: current)
    #expect(overlaps.isEmpty, "\(overlaps.prefix(3)) after \(step)")
    #expect(planner.consistencyViolations().isEmpty, "\(planner.consistencyViolations().prefix(3)) after \(step)")
    let after = Self.parts(current)
    for allocation in current {
      for rule in allocation.ruleAllocations {
        if rule.waitingForNatPorts { sawRuleWaiting = true }
        if !rule.drainNatIpPortRanges.isEmpty { sawRuleDrain = true }
      }
    }
    var moved: [String] = []
    // Each NIC's default ports and each of its rule ports are checked on their own: a change
    // to one pool must not move ports on another.
    for (part, old) in Self.parts(before) {
      let held = old.held
      let new = after[part]
      let newHeld = new?.held ?? []
      let unchanged = newHeld == held && new?.waiting == old.waiting
      switch scope {
      case .instance(let name):
        if part.nic.instance != name && !unchanged { moved.append("\(part)") }
      case .waitingOnly:
        if old.waiting {
          if !Set(held).isSubset(of: newHeld) { moved.append("\(part) lost ports") }
        } else if !unchanged {
          moved.append("\(part)")
        }
      case .natIps(let ips):
        if !old.waiting && !held.contains(where: { ips.contains($0.natIp.description) }) && !unchanged {
          moved.append("\(part)")
        }
      case .rule(let number, let ips):
        let inScope = (part.nic.gateway == "gw" && part.rule == number) || held.contains { ips.contains($0.natIp.description) }
        if !inScope && !unchanged { moved.append("\(part)") }
      case .gatewayPorts(let gateway):
        guard !old.waiting else { continue }
        if part.nic.gateway != gateway {
          if !unchanged { moved.append("\(part)") }
        } else if let new, new.activePorts >= old.activePorts {
          // Growing (or waiting to grow) keeps every block.
          if !Set(held).isSubset(of: newHeld) { moved.append("\(part) lost a block while growing") }
        } else {
          // Shrinking only drops or halves blocks: what is left lies inside what was held, and
          // some block still starts where it did.
          let inside = newHeld.allSatisfy { range in held.contains { $0.natIp == range.natIp && $0.firstPort <= range.firstPort && range.lastPort <= $0.lastPort } }
          let kept = newHeld.contains { range in held.contains { $0.natIp == range.natIp && $0.firstPort == range.firstPort } }
          if !inside || !kept { moved.append("\(part) moved while shrinking") }
        }
      }
    }
    #expect(moved.isEmpty, "\(moved.prefix(3)) changed after \(step)")
  }
}

/// Long CPU-bound runs, one at a time and yielding after every step: the whole test run shares one
/// cooperative pool (two threads on CI), and five of these at once starved the timing tests of
/// other suites for 20-40 s.
@Suite(.serialized) struct PropertyTests {
  @Test(arguments: [1, 2, 3] as [UInt64])
  func randomChangesNeverShareOrMovePorts(seed: UInt64) async throws {
    var world = try RandomWorld(seed: seed)
    for _ in 0..<1200 {
      try world.step()
      await Task.yield()
    }
    // Something happened: VMs got ports and some waited, blocks were quarantined and released.
    #expect(world.planner.instanceCount > 50)
    #expect(world.log.contains { $0.hasPrefix("grant") && $0.contains("granted") })
    #expect(world.log.contains { $0.hasPrefix("reclaim") && !$0.hasSuffix("[]") })
    // Rules came and went; NICs waited for rule ports and held drained rule ports.
    #expect(world.log.contains { $0.contains("rules [\"") })
    #expect(world.log.contains { $0.hasPrefix("gw") && $0.contains("rules []") })
    #expect(world.sawRuleWaiting && world.sawRuleDrain)

    // A restarted controller plans the same intent on top of the snapshot: nothing moves.
    let restored = try NATPlanner(intent: world.planner.intent, restoring: world.planner.snapshot())
    #expect(restored.allAllocations == world.planner.allAllocations)
    #expect(restored.quarantinedBlocks == world.planner.quarantinedBlocks)
    #expect(restored.gatewayStatuses == world.planner.gatewayStatuses)
  }

  @Test func sameSequenceSameResult() async throws {
    var first = try RandomWorld(seed: 42)
    var second = try RandomWorld(seed: 42)
    for _ in 0..<600 {
      try first.step()
      try second.step()
      await Task.yield()
    }
    #expect(first.log == second.log)
    #expect(first.planner.snapshot() == second.planner.snapshot())
    #expect(first.planner.gatewayStatuses == second.planner.gatewayStatuses)
  }

  @Test func aFullReplanKeepsEveryAllocation() async throws {
    var world = try RandomWorld(seed: 7)
    for _ in 0..<400 {
      try world.step()
      await Task.yield()
    }
    let before = world.planner.allAllocations
    try world.planner.apply(world.planner.intent)
    #expect(world.planner.allAllocations.filter { !$0.waitingForNatPorts } == before.filter { !$0.waitingForNatPorts })
  }
}
