import HostnatAddressing
import Foundation
import Testing

@testable import HostnatPlanner

@Suite struct NATRuleAllocationTests {
  let a = Fixture.ip(1)
  let b = Fixture.ip(2)
  let c = Fixture.ip(3)
  let d = Fixture.ip(4)

  @Test func everyNicGetsMinPortsPerVmOnEveryRulesIps() throws {
    let gateway = Fixture.manual([a], minPorts: 256, rules: [Fixture.rule(200, [c, d]), Fixture.rule(100, [b])])
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [gateway], instances: Fixture.vms(0..<10)))
    for i in 0..<10 {
      let allocation = try #require(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw")))
      #expect(allocation.numTotalNatPorts == 256)
      #expect(allocation.natIpPortRanges.allSatisfy { $0.natIp.description == a })
      // Sorted by rule number, whatever the intent's order.
      #expect(allocation.ruleAllocations.map(\.ruleNumber) == [100, 200])
      for rule in allocation.ruleAllocations {
        #expect(rule.natIpPortRanges.reduce(0) { $0 + $1.portCount } == 256)
        #expect(rule.drainNatIpPortRanges.isEmpty)
        #expect(!rule.waitingForNatPorts)
      }
      // Rules fill their IPs in order, like a gateway's pool.
      #expect(allocation.ruleAllocations[0].natIpPortRanges.allSatisfy { $0.natIp.description == b })
      #expect(allocation.ruleAllocations[1].natIpPortRanges.allSatisfy { $0.natIp.description == c })
      // get-nat-mapping-info shows the same rule mappings for every source of the NIC.
      let info = try #require(planner.natMappingInfo(instance: "vm\(i)"))
      #expect(info.interfaceNatMappings.allSatisfy { $0.ruleMappings == allocation.ruleAllocations })
    }
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)

    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.userAllocatedNatIps == [a])
    #expect(status.numVmEndpointsWithNatMappings == 10)
    #expect(
      status.ruleStatus == [
        NATRuleStatus(ruleNumber: 100, destinationRanges: ["198.51.100.0/24"], activeNatIps: [b], drainNatIps: [], minExtraIpsNeeded: 0, numVmEndpointsWithNatMappings: 10),
        NATRuleStatus(ruleNumber: 200, destinationRanges: ["198.51.200.0/24"], activeNatIps: [c, d], drainNatIps: [], minExtraIpsNeeded: 0, numVmEndpointsWithNatMappings: 10),
      ])
  }

  @Test func aliasRangesShareTheNicsRulePorts() throws {
    let vm = Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "pods")])
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a], rules: [Fixture.rule(1, [b])])], instances: [vm]))
    #expect(planner.allocations(instance: "vm1").count == 1)
    let info = try #require(planner.natMappingInfo(instance: "vm1"))
    #expect(info.interfaceNatMappings.count == 2)
    #expect(info.interfaceNatMappings.allSatisfy { $0.ruleMappings.map(\.ruleNumber) == [1] && $0.ruleMappings[0].natIpPortRanges.count == 1 })
  }

  /// Rule IPs get minPortsPerVm only, also with dynamic port allocation (a documented limitation).
  @Test func dynamicGatewaysGiveRulesTheMinimumOnly() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.dynamic([a], min: 64, max: 1024).with(rules: [Fixture.rule(1, [b])])], instances: Fixture.vms(0..<4)))
    let nic = NICRef(instance: "vm0", gateway: "gw")
    guard case .granted = planner.grant(nic) else {
      Issue.record("not granted")
      return
    }
    let allocation = try #require(planner.allocation(nic))
    #expect(allocation.numTotalNatPorts == 128)
    #expect(allocation.ruleAllocations[0].natIpPortRanges.map(\.description) == ["\(b):1024-1087"])
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func aRuleWithTooFewIpsLeavesNicsWithoutRuleMapping() throws {
    // 4096 ports: 15 NICs per IP. The default pool holds all 20 NICs, the rule only 15.
    var gateway = Fixture.manual([a, b], minPorts: 4096, rules: [Fixture.rule(100, [c])])
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [gateway], instances: Fixture.vms(0..<20)))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.minExtraNatIpsNeeded == 0)
    #expect(status.vmNicsWithoutNat.isEmpty)
    #expect(status.ruleStatus.map(\.minExtraIpsNeeded) == [1])
    #expect(status.ruleStatus.map(\.numVmEndpointsWithNatMappings) == [15])
    for i in 0..<20 {
      let allocation = try #require(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw")))
      #expect(allocation.numTotalNatPorts == 4096)
      #expect(!allocation.waitingForNatPorts)
      let rule = try #require(allocation.ruleAllocations.first)
      // Arrival order decides who waits, as for the default pool.
      #expect(rule.waitingForNatPorts == (i >= 15))
      #expect(rule.natIpPortRanges.isEmpty == (i >= 15))
    }

    // One more rule IP serves the waiting NICs and moves nobody.
    let before = (0..<15).map { planner.rulePorts(100, of: "vm\($0)") }
    gateway.rules = [Fixture.rule(100, [c, d])]
    try planner.apply(.upsertNatGateway(gateway))
    #expect((0..<15).map { planner.rulePorts(100, of: "vm\($0)") } == before)
    #expect((15..<20).allSatisfy { planner.rulePorts(100, of: "vm\($0)").first?.hasPrefix(d) == true })
    #expect(planner.status(gateway: "gw")?.ruleStatus.map(\.minExtraIpsNeeded) == [0])
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func drainingARuleIpKeepsItsBlocksAsDrained() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([a], rules: [Fixture.rule(100, [b, c])])], instances: Fixture.vms(0..<10)))
    let defaults = (0..<10).map { planner.ports("vm\($0)") }
    let original = (0..<10).map { planner.rulePorts(100, of: "vm\($0)") }
    #expect(original.allSatisfy { $0.count == 1 && $0[0].hasPrefix(b) })

    try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(100, [c], drain: [b])])))
    for i in 0..<10 {
      let rule = try #require(planner.rule(100, of: "vm\(i)"))
      #expect(rule.drainNatIpPortRanges.map(\.description) == original[i])
      #expect(rule.natIpPortRanges.count == 1 && rule.natIpPortRanges[0].natIp.description == c)
      #expect(planner.ports("vm\(i)") == defaults[i])
    }
    let status = try #require(planner.status(gateway: "gw")?.ruleStatus.first)
    #expect(status.activeNatIps == [c] && status.drainNatIps == [b])
    #expect(planner.quarantinedBlocks.isEmpty)
    // New VMs get nothing on the drained IP.
    try planner.upsertInstance(Fixture.vm(10))
    #expect(planner.rulePorts(100, of: "vm10").allSatisfy { $0.hasPrefix(c) })
    #expect(planner.overlaps.isEmpty)

    // Undrain: the original ranges are active again and the replacements are quarantined.
    try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(100, [b, c])])))
    for i in 0..<10 {
      #expect(planner.rulePorts(100, of: "vm\(i)") == original[i])
      #expect(planner.rule(100, of: "vm\(i)")?.drainNatIpPortRanges.isEmpty == true)
    }
    #expect(planner.quarantinedBlocks.count == 10)
    #expect(planner.quarantinedBlocks.allSatisfy { $0.reason == .portsReduced && $0.nic.gateway == "gw" && $0.range.natIp.description == c })

    // Drain again, then remove the drained IP: its blocks are quarantined.
    try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(100, [c], drain: [b])])))
    try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(100, [c])])))
    #expect((0..<10).allSatisfy { planner.rule(100, of: "vm\($0)")?.drainNatIpPortRanges.isEmpty == true })
    #expect(planner.quarantinedBlocks.filter { $0.reason == .natIpRemoved && $0.range.natIp.description == b }.count == 10)
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func drainingNeedsAnIpThatIsAlreadyInTheRule() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([a, b], rules: [Fixture.rule(100, [c]), Fixture.rule(200, [d])])], instances: Fixture.vms(0..<3)))
    let snapshot = planner.snapshot()
    let refused: [(NATGateway, String)] = [
      // A default NAT IP cannot be drained into a rule...
      (Fixture.manual([a], rules: [Fixture.rule(100, [c], drain: [b]), Fixture.rule(200, [d])]), "natGateways[gw].rules[100].sourceNatDrainIps[0]"),
      // ...nor another rule's IP...
      (Fixture.manual([a, b], rules: [Fixture.rule(100, [c], drain: [d])]), "natGateways[gw].rules[100].sourceNatDrainIps[0]"),
      // ...nor a rule IP into the gateway's drain list.
      (Fixture.manual([a, b], drain: [c], rules: [Fixture.rule(200, [d])]), "natGateways[gw].drainNatIps[0]"),
    ]
    for (gateway, field) in refused {
      #expect {
        try planner.apply(.upsertNatGateway(gateway))
      } throws: { error in
        (error as? PlannerValidationError)?.field == field
      }
      #expect(planner.snapshot() == snapshot)
    }
    // Moving an IP from the active to the drain list of its own rule is fine.
    try planner.apply(.upsertNatGateway(Fixture.manual([a, b], rules: [Fixture.rule(100, [], drain: [c]), Fixture.rule(200, [d])])))
    #expect(planner.rule(100, of: "vm0")?.drainNatIpPortRanges.count == 1)
    // With no active IP left, the NICs wait for ports on the rule.
    #expect(planner.rule(100, of: "vm0")?.waitingForNatPorts == true)
    #expect(planner.status(gateway: "gw")?.ruleStatus.first?.minExtraIpsNeeded == 1)
  }

  @Test func removingARuleQuarantinesItsBlocks() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([a], rules: [Fixture.rule(100, [b]), Fixture.rule(200, [c])])], instances: Fixture.vms(0..<5)))
    let before = planner.rangesByInstance
    let ruleRanges = (0..<5).flatMap { planner.rule(100, of: "vm\($0)")?.natIpPortRanges ?? [] }

    let summary = try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(200, [c])])))
    #expect(Set(summary.changedInstances) == Set((0..<5).map { "vm\($0)" }))
    #expect(summary.quarantined.map(\.range).sorted() == ruleRanges.sorted())
    #expect(summary.quarantined.allSatisfy { $0.reason == .natIpRemoved && $0.nic.gateway == "gw" })
    for i in 0..<5 {
      #expect(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw"))?.ruleAllocations.map(\.ruleNumber) == [200])
      // Everything else stays where it was.
      #expect(planner.rangesByInstance["vm\(i)"] == before["vm\(i)"]!.filter { !$0.contains("rule 100") })
    }
    #expect(planner.status(gateway: "gw")?.ruleStatus.map(\.ruleNumber) == [200])

    // The address is free for another use, but its quarantined blocks are not handed out.
    try planner.apply(.upsertNatGateway(Fixture.manual([b], rules: [Fixture.rule(200, [c])])))
    #expect(planner.overlaps.isEmpty)
    #expect((0..<5).allSatisfy { planner.ports("vm\($0)").allSatisfy { !ruleRanges.map(\.description).contains($0) } })
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func removingAnInstanceOrItsGatewayQuarantinesRuleBlocks() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([a], rules: [Fixture.rule(100, [b])])], instances: Fixture.vms(0..<3)))
    let summary = try planner.removeInstance("vm1")
    #expect(summary.quarantined.map { "\($0.range.natIp) \($0.reason)" }.sorted() == ["\(a) instanceRemoved", "\(b) instanceRemoved"])
    let gone = try planner.apply(.removeNatGateway("gw"))
    #expect(gone.quarantined.count == 4)
    #expect(gone.quarantined.allSatisfy { $0.reason == .gatewayRemoved })
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func movingADefaultIpIntoARuleQuarantinesItsBlocks() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a, b], minPorts: 4096)], instances: Fixture.vms(0..<20)))
    let onB = (0..<20).filter { planner.ports("vm\($0)").contains { $0.hasPrefix(b) } }
    #expect(onB.count == 5)
    let summary = try planner.apply(.upsertNatGateway(Fixture.manual([a, c], minPorts: 4096, rules: [Fixture.rule(1, [b])])))
    #expect(summary.quarantined.filter { $0.reason == .natIpRemoved }.count == 5)
    // The rule cannot use b's quarantined blocks, so five NICs wait on the rule until release.
    #expect(planner.status(gateway: "gw")?.ruleStatus.first?.numVmEndpointsWithNatMappings == 10)
    #expect(planner.overlaps.isEmpty)
    planner.releaseQuarantined(planner.quarantinedBlocks.map(\.id))
    #expect(planner.status(gateway: "gw")?.ruleStatus.first?.numVmEndpointsWithNatMappings == 15)
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func newNicsAndGatewaysWithRulesGetRulePorts() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a])], instances: Fixture.vms(0..<3)))
    #expect(planner.allocation(NICRef(instance: "vm0", gateway: "gw"))?.ruleAllocations == [])
    try planner.apply(.upsertNatGateway(Fixture.manual([a], rules: [Fixture.rule(9, [b])])))
    #expect((0..<3).allSatisfy { planner.rulePorts(9, of: "vm\($0)").count == 1 })
    try planner.upsertInstance(Fixture.vm(3))
    #expect(planner.rulePorts(9, of: "vm3").count == 1)
    // A NIC leaving the gateway's ranges gives back its rule ports too.
    let moved = try planner.upsertInstance(Fixture.vm(3, externalIP: "198.51.100.1"))
    #expect(moved.quarantined.count == 2)
    #expect(moved.quarantined.allSatisfy { $0.reason == .noLongerTranslated })
    #expect(planner.consistencyViolations().isEmpty)
  }
}

@Suite struct NATRuleSnapshotTests {
  @Test func rulesSurviveASnapshot() throws {
    let gateway = Fixture.manual([Fixture.ip(1)], minPorts: 4096, rules: [Fixture.rule(5, [Fixture.ip(2), Fixture.ip(3)]), Fixture.rule(1, [Fixture.ip(4)])])
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [gateway], instances: Fixture.vms(0..<20)))
    // Drained rule IPs, a NIC waiting on a rule and quarantined rule blocks, all in one snapshot.
    try planner.apply(.upsertNatGateway(Fixture.manual([Fixture.ip(1), Fixture.ip(7)], minPorts: 4096, rules: [Fixture.rule(5, [Fixture.ip(3)], drain: [Fixture.ip(2)]), Fixture.rule(1, [Fixture.ip(4)])])))
    try planner.removeInstance("vm2")
    let snapshot = planner.snapshot()
    #expect(snapshot.natIps.contains { $0.ruleNumber == 5 && $0.drained })
    #expect(snapshot.allocations.contains { $0.ruleNumber == 1 && $0.waitingOrder != nil })
    let decoded = try JSONDecoder().decode(NATPlannerSnapshot.self, from: try JSONEncoder().encode(snapshot))
    #expect(decoded == snapshot)
    let restored = try NATPlanner(intent: planner.intent, restoring: decoded)
    #expect(restored.allAllocations == planner.allAllocations)
    #expect(restored.quarantinedBlocks == planner.quarantinedBlocks)
    #expect(restored.gatewayStatuses == planner.gatewayStatuses)
    // Restoring is itself a change (the epoch moves on); nothing else differs.
    var again = restored.snapshot()
    again.epoch = snapshot.epoch
    #expect(again == snapshot)
  }

  /// A snapshot written before NAT rules existed has no ruleNumber fields: it means no rules, and
  /// rules added on top of it get ports without moving anyone.
  @Test func snapshotsFromBeforeRulesStillRestore() throws {
    let json = """
      {"allocations":[{"blocks":[{"firstPort":1024,"natIp":"203.0.113.1","size":64}],"gateway":"gw","host":"h0","instance":"vm0","nicIndex":0,"targetPorts":64},\
      {"blocks":[{"firstPort":1088,"natIp":"203.0.113.1","size":64}],"gateway":"gw","host":"h1","instance":"vm1","nicIndex":0,"targetPorts":64}],\
      "epoch":3,"natIps":[{"address":"203.0.113.1","auto":false,"drained":false,"gateway":"gw"}],"nextQuarantineID":2,\
      "quarantine":[{"block":{"firstPort":1152,"natIp":"203.0.113.1","size":64},"epoch":2,"gateway":"gw","host":"h2","id":1,"instance":"vm2","nicIndex":0,"reason":"instanceRemoved"}]}
      """
    let snapshot = try JSONDecoder().decode(NATPlannerSnapshot.self, from: Data(json.utf8))
    #expect(snapshot.natIps.allSatisfy { $0.ruleNumber == nil })
    #expect(snapshot.allocations.allSatisfy { $0.ruleNumber == nil })

    let intent = Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<2))
    let restored = try NATPlanner(intent: intent, restoring: snapshot)
    #expect(restored.ports("vm0") == ["203.0.113.1:1024-1087"])
    #expect(restored.ports("vm1") == ["203.0.113.1:1088-1151"])
    #expect(restored.quarantinedBlocks.count == 1)
    #expect(restored.allocation(NICRef(instance: "vm0", gateway: "gw"))?.ruleAllocations == [])
    // Without rules, a snapshot encodes exactly as before: no ruleNumber keys.
    #expect(!String(decoding: try JSONEncoder().encode(restored.snapshot()), as: UTF8.self).contains("ruleNumber"))

    var withRules = intent
    withRules.natGateways = [Fixture.manual([Fixture.ip(1)], rules: [Fixture.rule(1, [Fixture.ip(2)])])]
    let upgraded = try NATPlanner(intent: withRules, restoring: snapshot)
    #expect(upgraded.ports("vm0") == ["203.0.113.1:1024-1087"])
    #expect(upgraded.rulePorts(1, of: "vm1") == ["203.0.113.2:1088-1151"])
    #expect(upgraded.overlaps.isEmpty)
  }

  /// A rule number outside 1...65000 in a snapshot is an error, for NAT IPs as for allocations
  /// (above Int32.max it used to crash; -1 landed in the default pool).
  @Test(arguments: [0, -1, 65001, Int(Int32.max) + 1])
  func badRuleNumbersInASnapshotAreRefused(number: Int) throws {
    let gateway = Fixture.manual([Fixture.ip(1)], rules: [Fixture.rule(1, [Fixture.ip(2)])])
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [gateway], instances: Fixture.vms(0..<1)))
    let snapshot = planner.snapshot()
    let ip = try #require(snapshot.natIps.firstIndex { $0.ruleNumber == 1 })
    let allocation = try #require(snapshot.allocations.firstIndex { $0.ruleNumber == 1 })
    var badIp = snapshot
    badIp.natIps[ip].ruleNumber = number
    #expect(throws: PlannerValidationError(field: "snapshot.natIps[\(ip)].ruleNumber", reason: "must be between 1 and 65000 (got \(number))")) {
      try NATPlanner(intent: planner.intent, restoring: badIp)
    }
    var badAllocation = snapshot
    badAllocation.allocations[allocation].ruleNumber = number
    #expect(throws: PlannerValidationError(field: "snapshot.allocations[\(allocation)].ruleNumber", reason: "must be between 1 and 65000 (got \(number))")) {
      try NATPlanner(intent: planner.intent, restoring: badAllocation)
    }
  }
}

extension NATGateway {
  func with(rules: [NATRule]) -> NATGateway {
    var copy = self
    copy.rules = rules
    return copy
  }
}
