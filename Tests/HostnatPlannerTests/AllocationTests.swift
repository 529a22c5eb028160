import HostnatAddressing
import Testing

@testable import HostnatPlanner

@Suite struct PortMathTests {
  @Test(arguments: [
    (64, 1008), (4096, 15), (2, 32256), (32, 2016), (1024, 63), (2048, 31), (8192, 7), (16384, 3), (32768, 1),
  ])
  func blocksPerIp(size: Int, expected: Int) {
    #expect(NATPorts.blocksPerIp(blockSize: size) == expected)
  }

  @Test(arguments: [(1, 1), (2, 2), (3, 4), (64, 64), (100, 128), (1000, 1024), (57344, 65536)])
  func roundUp(value: Int, expected: Int) {
    #expect(NATPorts.roundUpToPowerOfTwo(value) == expected)
  }

  @Test func portSpaceAllocatesEveryUsablePortOnceAndMergesBack() {
    var space = PortSpace()
    #expect(space.freePorts == 64512)
    var offsets: [Int] = []
    while let offset = space.allocate(level: 6) { offsets.append(offset) }
    #expect(offsets.count == 1008)
    #expect(offsets.min() == 1024)
    #expect(offsets.max() == 65536 - 64)
    #expect(Set(offsets).count == 1008)
    for offset in offsets.reversed() { space.free(offset: offset, level: 6) }
    #expect(space == PortSpace())
  }

  @Test func exactAllocationRejectsOverlapsAndMisalignment() {
    var space = PortSpace()
    let results = [
      space.allocate(offset: 4096, level: 10), space.allocate(offset: 4096 + 512, level: 9), space.allocate(offset: 1000, level: 3),
      space.allocate(offset: 1024 + 1, level: 1), space.allocate(offset: 0, level: 10), space.allocate(offset: 5120, level: 10),
    ]
    #expect(results == [true, false, false, false, false, true])
    #expect(space.freePorts == 64512 - 2048)
  }

  @Test(arguments: [
    // (blocks needed per level, blocks available per level, expected extra IPs)
    ([6: 1009], [:], 2),
    ([6: 1008], [:], 1),
    ([6: 10], [6: 10], 0),
    ([6: 11], [7: 5], 1),
    ([12: 16], [:], 2),
    ([15: 3], [:], 3),
    // 32768-65535 and 496 blocks of 64 (1024-32767) fill one IP.
    ([15: 1, 6: 496], [:], 1),
    ([15: 1, 6: 497], [:], 2),
    ([10: 1], [9: 1, 8: 2], 1),
    ([8: 4], [9: 1, 8: 2], 0),
  ] as [([Int: Int], [Int: Int], Int)])
  func extraNatIpsNeeded(needed: [Int: Int], available: [Int: Int], expected: Int) {
    func counts(_ d: [Int: Int]) -> [Int] { (0..<16).map { d[$0] ?? 0 } }
    #expect(NATPlanner.extraNatIpsNeeded(blocksNeeded: counts(needed), blocksAvailable: counts(available)) == expected)
  }

  @Test(arguments: [
    ("10.0.0.0/8", true), ("192.0.2.1", true), ("10.0.0.1/24", false), ("10.0.0.0/33", false), ("10.0.0/8", false),
    ("banana", false), ("010.0.0.0/8", false), ("10.0.0.0/", false), ("256.0.0.0/8", false),
  ])
  func cidrParsing(text: String, valid: Bool) {
    #expect((IPv4CIDR(strict: text) != nil) == valid)
  }

  @Test func cidrRelations() throws {
    let a = try #require(IPv4CIDR(strict: "10.0.0.0/16"))
    let b = try #require(IPv4CIDR(strict: "10.0.4.0/24"))
    let c = try #require(IPv4CIDR(strict: "10.1.0.0/16"))
    #expect(a.contains(b) && a.overlaps(b) && b.overlaps(a) && !b.contains(a))
    #expect(!a.overlaps(c))
    #expect(a.contains(IPv4Address("10.0.255.255")!))
    #expect(!a.contains(IPv4Address("10.1.0.0")!))
    #expect(IPv4Address("203.0.113.5")?.description == "203.0.113.5")
  }
}

@Suite struct StaticAllocationTests {
  /// One NAT IP and one more VM than it can hold: the IP holds exactly `perIp` VMs.
  /// 57344 rounds up to 65536: two 32768-port blocks, and an IP holds only one, so no VM fits;
  /// one more IP is enough since the existing IP's free block counts.
  @Test(arguments: [(64, 1008, 64), (4096, 15, 4096), (100, 504, 128), (2, 32256, 2), (57344, 0, 65536)])
  func oneNatIpHolds(minPorts: Int, perIp: Int, portsPerVm: Int) throws {
    let count = perIp + 1
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)], minPorts: minPorts)], instances: Fixture.vms(0..<count)))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.numVmEndpointsWithNatMappings == perIp)
    #expect(status.vmNicsWithoutNat.map(\.instance) == ["vm\(perIp)"])
    #expect(status.minExtraNatIpsNeeded == 1)
    #expect(status.minPortsPerVm == portsPerVm)
    if perIp > 0 {
      let first = try #require(planner.allocation(NICRef(instance: "vm0", gateway: "gw")))
      #expect(first.numTotalNatPorts == portsPerVm)
      #expect(first.natIpPortRanges.first?.firstPort == max(1024, portsPerVm))
    }
    for allocation in planner.allAllocations {
      for range in allocation.natIpPortRanges {
        #expect(range.firstPort >= 1024 && range.lastPort <= 65535)
        #expect(range.firstPort % range.portCount == 0)
      }
    }
    #expect(planner.overlaps.isEmpty)
  }

  @Test func defaultIs64PortsFromPort1024() throws {
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(5)])], instances: Fixture.vms(0..<3)))
    #expect(planner.ports("vm0") == ["203.0.113.5:1024-1087"])
    #expect(planner.ports("vm1") == ["203.0.113.5:1088-1151"])
    #expect(planner.ports("vm2") == ["203.0.113.5:1152-1215"])
  }

  @Test func largeStaticMinimumUsesTwoBlocksOnTwoIps() throws {
    let planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual(Fixture.ips(1..<5), minPorts: 57344)], instances: Fixture.vms(0..<3)))
    #expect(planner.ports("vm0") == ["203.0.113.1:32768-65535", "203.0.113.2:32768-65535"])
    #expect(planner.ports("vm1") == ["203.0.113.3:32768-65535", "203.0.113.4:32768-65535"])
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.vmNicsWithoutNat.map(\.instance) == ["vm2"])
    #expect(status.minExtraNatIpsNeeded == 2)
  }

  @Test func manualPoolTooSmallListsLeftOutInArrivalOrder() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual(Fixture.ips(1..<3))], instances: Fixture.vms(0..<2020)))
    var status = try #require(planner.status(gateway: "gw"))
    #expect(status.numVmEndpointsWithNatMappings == 2016)
    #expect(status.vmNicsWithoutNat.map(\.instance) == ["vm2016", "vm2017", "vm2018", "vm2019"])
    #expect(status.minExtraNatIpsNeeded == 1)
    #expect(planner.allocation(NICRef(instance: "vm2017", gateway: "gw"))?.waitingForNatPorts == true)

    // A later VM queues behind the earlier ones.
    try planner.upsertInstance(Fixture.vm(3000))
    status = try #require(planner.status(gateway: "gw"))
    #expect(status.vmNicsWithoutNat.last?.instance == "vm3000")

    // Removing two VMs frees their blocks only after release; then the first two waiting get them.
    try planner.removeInstance("vm5")
    try planner.removeInstance("vm6")
    #expect(planner.status(gateway: "gw")?.vmNicsWithoutNat.count == 5)
    let summary = planner.releaseQuarantined(planner.quarantinedBlocks.map(\.id))
    #expect(Set(summary.changedInstances) == ["vm2016", "vm2017"])
    #expect(planner.ports("vm2016") == ["203.0.113.1:1344-1407"])
    #expect(planner.ports("vm2017") == ["203.0.113.1:1408-1471"])
    status = try #require(planner.status(gateway: "gw"))
    #expect(status.vmNicsWithoutNat.map(\.instance) == ["vm2018", "vm2019", "vm3000"])

    // One more NAT IP serves the rest, nobody else moves.
    let before = planner.rangesByInstance
    try planner.apply(.upsertNatGateway(Fixture.manual(Fixture.ips(1..<4))))
    status = try #require(planner.status(gateway: "gw"))
    #expect(status.vmNicsWithoutNat.isEmpty && status.minExtraNatIpsNeeded == 0)
    let after = planner.rangesByInstance
    for (name, ranges) in before where !ranges.isEmpty { #expect(after[name] == ranges) }
    #expect(planner.ports("vm3000") == ["203.0.113.3:1152-1215"])
  }

  @Test func minExtraNatIpsForLargeBlocks() throws {
    let planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)], minPorts: 4096)], instances: Fixture.vms(0..<40)))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.numVmEndpointsWithNatMappings == 15)
    #expect(status.vmNicsWithoutNat.count == 25)
    #expect(status.minExtraNatIpsNeeded == 2)
  }

  @Test func changingMinPortsKeepsEachVmsExistingPorts() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1), Fixture.ip(2)])], instances: Fixture.vms(0..<4)))
    let before = planner.rangesByInstance
    try planner.apply(.upsertNatGateway(Fixture.manual([Fixture.ip(1), Fixture.ip(2)], minPorts: 128)))
    let after = planner.rangesByInstance
    for i in 0..<4 {
      let ports = planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw"))!
      #expect(ports.numTotalNatPorts == 128)
      // The old block is still there; the VM gained a second one.
      #expect(before["vm\(i)"]!.allSatisfy { after["vm\(i)"]!.contains($0) })
    }
    #expect(planner.quarantinedBlocks.isEmpty)

    try planner.apply(.upsertNatGateway(Fixture.manual([Fixture.ip(1), Fixture.ip(2)], minPorts: 32)))
    for i in 0..<4 {
      // Back down: the VM keeps the lower half of its first block.
      let first = before["vm\(i)"]![0].split(separator: " ")[1]
      let start = Int(first.split(separator: ":")[1].split(separator: "-")[0])!
      #expect(planner.ports("vm\(i)") == ["203.0.113.1:\(start)-\(start + 31)"])
    }
    #expect(planner.quarantinedBlocks.allSatisfy { $0.reason == .portsReduced })
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)
  }
}

@Suite struct AutoAllocationTests {
  @Test func takesIpsAsNeededAndReleasesUnusedOnes() throws {
    let gateway = NATGateway(name: "gw", router: "rt")
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [gateway], instances: Fixture.vms(0..<2000), autoPool: Fixture.ips(10..<15)))
    var status = try #require(planner.status(gateway: "gw"))
    #expect(status.autoAllocatedNatIps == ["203.0.113.10", "203.0.113.11"])
    #expect(status.userAllocatedNatIps.isEmpty)
    #expect(status.numVmEndpointsWithNatMappings == 2000)

    // Remove everyone on the second IP: it is released once their blocks leave quarantine.
    for i in 1008..<2000 { try planner.removeInstance("vm\(i)") }
    #expect(planner.status(gateway: "gw")?.autoAllocatedNatIps.count == 2)
    planner.releaseQuarantined(planner.quarantinedBlocks.map(\.id))
    status = try #require(planner.status(gateway: "gw"))
    #expect(status.autoAllocatedNatIps == ["203.0.113.10"])

    // Exhaust the pool: 5 IPs hold 5040 VMs.
    for i in 1008..<5050 { try planner.upsertInstance(Fixture.vm(i)) }
    status = try #require(planner.status(gateway: "gw"))
    #expect(status.autoAllocatedNatIps == Fixture.ips(10..<15))
    #expect(status.vmNicsWithoutNat.count == 10)
    #expect(status.minExtraNatIpsNeeded == 1)

    // A bigger pool serves them on the next change.
    try planner.apply(.setAutoNatIpPool(AutoNATIPPool(region: "r1", natIps: Fixture.ips(10..<16))))
    #expect(planner.status(gateway: "gw")?.vmNicsWithoutNat.isEmpty == true)
    #expect(planner.overlaps.isEmpty)
  }

  @Test func gatewaysOfOneRegionShareThePoolWithoutOverlap() throws {
    let intent = Fixture.intent(
      gateways: [NATGateway(name: "gw", router: "rt"), NATGateway(name: "gw2", router: "rt2")],
      instances: Fixture.vms(0..<1500) + (0..<1500).map { i in
        Instance(name: "other\(i)", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "t1", networkIP: "10.0.\(i / 250).\(i % 250 + 2)")])
      },
      autoPool: Fixture.ips(10..<20))
    let planner = try NATPlanner(intent: intent)
    let a = try #require(planner.status(gateway: "gw")).autoAllocatedNatIps
    let b = try #require(planner.status(gateway: "gw2")).autoAllocatedNatIps
    #expect(a.count == 2 && b.count == 2)
    #expect(Set(a).isDisjoint(with: b))
    #expect(planner.overlaps.isEmpty)
  }
}

@Suite struct DrainTests {
  @Test func drainedIpKeepsExistingRangesForDrainOnly() throws {
    let a = Fixture.ip(1)
    let b = Fixture.ip(2)
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a, b])], instances: Fixture.vms(0..<10)))
    let original = (0..<10).map { planner.ports("vm\($0)") }
    #expect(original.allSatisfy { $0.count == 1 && $0[0].hasPrefix(a) })

    try planner.apply(.upsertNatGateway(Fixture.manual([b], drain: [a])))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.userAllocatedNatIps == [b])
    #expect(status.drainUserAllocatedNatIps == [a])
    for i in 0..<10 {
      let allocation = try #require(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw")))
      #expect(allocation.drainNatIpPortRanges.map(\.description) == original[i])
      #expect(allocation.numTotalDrainNatPorts == 64)
      #expect(allocation.natIpPortRanges.count == 1 && allocation.natIpPortRanges[0].natIp.description == b)
      #expect(allocation.numTotalNatPorts == 64)
    }
    // New VMs get nothing on the drained IP.
    try planner.upsertInstance(Fixture.vm(10))
    #expect(planner.ports("vm10").allSatisfy { $0.hasPrefix(b) })
    #expect(planner.overlaps.isEmpty)

    // Undrain: the original ranges are active again and the replacements go back.
    try planner.apply(.upsertNatGateway(Fixture.manual([a, b])))
    for i in 0..<10 {
      let allocation = try #require(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw")))
      #expect(allocation.natIpPortRanges.map(\.description) == original[i])
      #expect(allocation.drainNatIpPortRanges.isEmpty)
    }
    #expect(planner.quarantinedBlocks.count == 10)
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func removingADrainedIpEndsItsRanges() throws {
    let a = Fixture.ip(1)
    let b = Fixture.ip(2)
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a, b])], instances: Fixture.vms(0..<3)))
    try planner.apply(.upsertNatGateway(Fixture.manual([b], drain: [a])))
    try planner.apply(.upsertNatGateway(Fixture.manual([b])))
    for i in 0..<3 {
      #expect(planner.allocation(NICRef(instance: "vm\(i)", gateway: "gw"))?.drainNatIpPortRanges.isEmpty == true)
    }
    #expect(planner.quarantinedBlocks.filter { $0.reason == .natIpRemoved }.count == 3)
    #expect(planner.status(gateway: "gw")?.drainUserAllocatedNatIps.isEmpty == true)
    // The removed IP is forgotten once its quarantined blocks are released.
    planner.releaseQuarantined(planner.quarantinedBlocks.map(\.id))
    #expect(planner.snapshot().natIps.map(\.address) == [b])
  }

  @Test func removingAnActiveIpMovesItsVmsToAnotherIp() throws {
    let a = Fixture.ip(1)
    let b = Fixture.ip(2)
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([a, b])], instances: Fixture.vms(0..<1010)))
    let before = planner.rangesByInstance
    try planner.apply(.upsertNatGateway(Fixture.manual([b])))
    // vm1008 and vm1009 were already on b and keep their ports.
    #expect(planner.rangesByInstance["vm1008"] == before["vm1008"])
    #expect(planner.rangesByInstance["vm1009"] == before["vm1009"])
    let status = try #require(planner.status(gateway: "gw"))
    // b had room for 1006 more; the last two VMs that were on a wait.
    #expect(status.numVmEndpointsWithNatMappings == 1008)
    #expect(status.vmNicsWithoutNat.map(\.instance) == ["vm1006", "vm1007"])
    #expect(planner.overlaps.isEmpty)
  }
}

@Suite struct SourceSelectionTests {
  @Test func externalIpPrimaryIsNotTranslatedButAliasesAre() throws {
    let plain = Fixture.vm(1, externalIP: "198.51.100.7")
    let withAlias = Fixture.vm(2, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/28", subnetworkRangeName: "pods")], externalIP: "198.51.100.8")
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: [plain, withAlias]))
    #expect(planner.allocations(instance: "vm1").isEmpty)
    let allocation = try #require(planner.allocations(instance: "vm2").first)
    #expect(allocation.sourceVirtualIp == nil)
    #expect(allocation.sourceAliasIpRanges == ["10.100.0.0/28"])
    #expect(allocation.numTotalNatPorts == 64)
  }

  @Test func aliasRangesShareTheNicsPorts() throws {
    let vm = Fixture.vm(
      1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "pods"), AliasIPRange(ipCidrRange: "10.0.200.0/28")])
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: [vm]))
    let info = try #require(planner.natMappingInfo(instance: "vm1"))
    #expect(info.interfaceNatMappings.map { $0.sourceVirtualIp ?? $0.sourceAliasIpRange! } == ["10.0.0.3", "10.100.0.0/24", "10.0.200.0/28"])
    #expect(Set(info.interfaceNatMappings.map(\.natIpPortRanges)).count == 1)
    #expect(info.interfaceNatMappings.allSatisfy { $0.numTotalNatPorts == 64 })
  }

  struct SelectionCase: Sendable, CustomTestStringConvertible {
    var name: String
    var gateways: [NATGateway]
    /// Expected sources per gateway for a VM in s1 with a "pods" alias and a VM in s2.
    var expected: [String: [String]]
    var testDescription: String { name }
  }

  static let podsAlias = AliasIPRange(ipCidrRange: "10.100.0.0/28", subnetworkRangeName: "pods")
  static let svcAlias = AliasIPRange(ipCidrRange: "10.101.0.0/28", subnetworkRangeName: "svc")

  @Test(arguments: [
    SelectionCase(
      name: "all ranges", gateways: [NATGateway(name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])],
      expected: ["gw": ["vm1:10.0.0.3", "vm1:10.100.0.0/28", "vm1:10.101.0.0/28", "vm2:10.1.0.4"]]),
    SelectionCase(
      name: "all primary ranges",
      gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .allSubnetworksAllPrimaryIpRanges, natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"])
      ],
      expected: ["gw": ["vm1:10.0.0.3", "vm2:10.1.0.4"]]),
    SelectionCase(
      name: "listed primary only",
      gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.primaryIpRange])], natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ],
      expected: ["gw": ["vm1:10.0.0.3"]]),
    SelectionCase(
      name: "listed secondary range only",
      gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.listOfSecondaryIpRanges], secondaryIpRangeNames: ["pods"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ],
      expected: ["gw": ["vm1:10.100.0.0/28"]]),
    SelectionCase(
      name: "primary ranges and a secondary range on two gateways",
      gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .allSubnetworksAllPrimaryIpRanges, natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.listOfSecondaryIpRanges], secondaryIpRangeNames: ["svc"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ],
      expected: ["gw": ["vm1:10.0.0.3", "vm2:10.1.0.4"], "gw2": ["vm1:10.101.0.0/28"]]),
    SelectionCase(
      name: "listed subnet with all its ranges",
      gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s2")],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ],
      expected: ["gw": ["vm2:10.1.0.4"]]),
  ])
  func subnetSelection(_ selection: SelectionCase) throws {
    let vm1 = Fixture.vm(1, aliases: [Self.podsAlias, Self.svcAlias])
    let vm2 = Fixture.vm(2, subnet: "s2")
    let planner = try NATPlanner(intent: Fixture.intent(gateways: selection.gateways, instances: [vm1, vm2]))
    var sources: [String: [String]] = [:]
    for allocation in planner.allAllocations {
      #expect(allocation.numTotalNatPorts == 64)
      let all = (allocation.sourceVirtualIp.map { [$0] } ?? []) + allocation.sourceAliasIpRanges
      sources[allocation.nic.gateway, default: []] += all.map { "\(allocation.nic.instance):\($0)" }
    }
    #expect(sources == selection.expected)
    #expect(planner.overlaps.isEmpty)
  }
}

@Suite struct DynamicAllocationTests {
  let nic = NICRef(instance: "vm0", gateway: "gw")

  @Test func grantDoublesUpToMaxAndReclaimShrinksBackToMin() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.dynamic([Fixture.ip(1)], min: 32, max: 256)], instances: Fixture.vms(0..<2)))
    #expect(planner.allocation(nic)?.numTotalNatPorts == 32)
    #expect(planner.status(gateway: "gw")?.enableEndpointIndependentMapping == false)
    var expectedTotal = 32
    while expectedTotal < 256 {
      let preview = try #require(planner.allocation(nic)?.dynamic?.nextGrant)
      #expect(preview.portCount == expectedTotal)
      #expect(planner.grant(nic) == .granted(preview))
      expectedTotal *= 2
      #expect(planner.allocation(nic)?.numTotalNatPorts == expectedTotal)
      #expect(planner.allocation(nic)?.dynamic?.targetPorts == expectedTotal)
    }
    #expect(planner.allocation(nic)?.dynamic?.nextGrant == nil)
    #expect(planner.grant(nic) == .atMaximum)
    #expect(planner.allocation(nic)?.natIpPortRanges.allSatisfy { $0.natIp.description == Fixture.ip(1) } == true)

    // Busy: nothing to give back.
    #expect(planner.reclaim(nic, portsInUse: 100).isEmpty)
    // One halving step is what the status previews.
    let preview = try #require(planner.allocation(nic)?.dynamic?.nextReclaim)
    #expect(preview.reduce(0) { $0 + $1.portCount } == 128)
    #expect(planner.reclaim(nic, portsInUse: 60) == preview)
    #expect(planner.allocation(nic)?.numTotalNatPorts == 128)
    // Idle: straight back to the minimum, and never below it.
    #expect(planner.reclaim(nic, portsInUse: 0).reduce(0) { $0 + $1.portCount } == 96)
    #expect(planner.allocation(nic)?.numTotalNatPorts == 32)
    #expect(planner.reclaim(nic, portsInUse: 0).isEmpty)
    #expect(planner.quarantinedBlocks.allSatisfy { $0.reason == .reclaimed })
    #expect(planner.overlaps.isEmpty)
    #expect(planner.consistencyViolations().isEmpty)
  }

  @Test func grantUsesAnotherIpWhenTheFirstIsFull() throws {
    // 2016 VMs of 32 ports fill the first IP exactly.
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.dynamic([Fixture.ip(1), Fixture.ip(2)], min: 32, max: 64)], instances: Fixture.vms(0..<2016)))
    guard case .granted(let range) = planner.grant(nic) else {
      Issue.record("expected a grant")
      return
    }
    #expect(range.natIp.description == Fixture.ip(2))
    #expect(planner.allocation(nic)?.numTotalNatPorts == 64)
  }

  @Test func grantOutcomes() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)], minPorts: 32768)], instances: Fixture.vms(0..<2)))
    #expect(planner.grant(nic) == .notDynamic)
    #expect(planner.grant(NICRef(instance: "nobody", gateway: "gw")) == .unknownNic)
    planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.dynamic([Fixture.ip(1)], min: 32768, max: 65536)], instances: Fixture.vms(0..<2)))
    #expect(planner.grant(NICRef(instance: "vm1", gateway: "gw")) == .waitingForNatPorts)
    #expect(planner.grant(nic) == .noFreePorts)
  }
}

@Suite struct QuarantineTests {
  @Test func freedBlocksAreNotReusedUntilReleased() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<3)))
    let removed = planner.ports("vm1")
    let summary = try planner.removeInstance("vm1")
    #expect(summary.changedInstances == ["vm1"])
    #expect(summary.quarantined.map(\.range.description) == removed)
    #expect(summary.quarantined.first?.reason == .instanceRemoved)
    #expect(summary.quarantined.first?.host == "h1")

    try planner.upsertInstance(Fixture.vm(3))
    #expect(planner.ports("vm3") != removed)

    let released = planner.releaseQuarantined { $0.nic.instance == "vm1" }
    #expect(released.epoch == planner.epoch)
    #expect(planner.quarantinedBlocks.isEmpty)
    try planner.upsertInstance(Fixture.vm(4))
    #expect(planner.ports("vm4") == removed)
  }

  @Test func epochsAndQuarantineIdsOrderChanges() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<3)))
    let e0 = planner.epoch
    try planner.removeInstance("vm0")
    try planner.removeInstance("vm2")
    let blocks = planner.quarantinedBlocks
    #expect(blocks.map(\.nic.instance) == ["vm0", "vm2"])
    #expect(blocks.map(\.epoch) == [e0 + 1, e0 + 2])
    #expect(blocks[0].id < blocks[1].id)
  }
}

@Suite struct SnapshotTests {
  @Test func restoringKeepsEveryAllocation() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.dynamic(Fixture.ips(1..<3), min: 32, max: 1024)], instances: Fixture.vms(0..<50)))
    for i in stride(from: 0, to: 50, by: 3) { _ = planner.grant(NICRef(instance: "vm\(i)", gateway: "gw")) }
    try planner.removeInstance("vm7")
    let restored = try NATPlanner(intent: planner.intent, restoring: planner.snapshot())
    #expect(restored.allAllocations == planner.allAllocations)
    #expect(restored.quarantinedBlocks == planner.quarantinedBlocks)

    // A from-scratch plan with one VM fewer keeps everyone else's ports.
    var intent = planner.intent
    intent.instances.removeAll { $0.name == "vm10" }
    let replanned = try NATPlanner(intent: intent, restoring: planner.snapshot())
    var expected = planner.rangesByInstance
    expected["vm10"] = nil
    #expect(replanned.rangesByInstance == expected)
    #expect(replanned.quarantinedBlocks.last?.nic.instance == "vm10")
  }

  @Test func restoreRejectsOverlappingBlocks() throws {
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<2)))
    var snapshot = planner.snapshot()
    snapshot.allocations[1].blocks = snapshot.allocations[0].blocks
    #expect(throws: PlannerValidationError.self) { try NATPlanner(intent: planner.intent, restoring: snapshot) }
  }
}

@Suite struct GatewayLifecycleTests {
  @Test func defaultsAreCloudNats() throws {
    let planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<1)))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.timeouts == NATTimeouts(udpIdleSec: 30, icmpIdleSec: 30, tcpEstablishedIdleSec: 1200, tcpTransitoryIdleSec: 30, tcpTimeWaitSec: 120))
    #expect(status.enableEndpointIndependentMapping)
    #expect(!status.enableDynamicPortAllocation)
    #expect(status.minPortsPerVm == 64 && status.maxPortsPerVm == 64)
  }

  @Test func removingAGatewayQuarantinesItsBlocksAndFreesItsIps() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<5)))
    let summary = try planner.apply(.removeNatGateway("gw"))
    #expect(Set(summary.changedInstances) == Set((0..<5).map { "vm\($0)" }))
    #expect(summary.quarantined.count == 5 && summary.quarantined.allSatisfy { $0.reason == .gatewayRemoved })
    #expect(planner.allAllocations.isEmpty)
    // While quarantined, the IP cannot hand those ports to another gateway.
    try planner.apply(.upsertNatGateway(Fixture.manual([Fixture.ip(1)], name: "other")))
    #expect(planner.ports("vm0", gateway: "other") == ["203.0.113.1:1344-1407"])
    #expect(planner.overlaps.isEmpty)
  }

  @Test func switchingFromAutoToManualMovesEveryoneToTheManualIps() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [NATGateway(name: "gw", router: "rt")], instances: Fixture.vms(0..<3), autoPool: Fixture.ips(50..<52)))
    #expect(planner.status(gateway: "gw")?.autoAllocatedNatIps == [Fixture.ip(50)])
    try planner.apply(.upsertNatGateway(Fixture.manual([Fixture.ip(1)])))
    let status = try #require(planner.status(gateway: "gw"))
    #expect(status.autoAllocatedNatIps.isEmpty && status.userAllocatedNatIps == [Fixture.ip(1)])
    #expect(planner.ports("vm0") == ["203.0.113.1:1024-1087"])
    #expect(planner.quarantinedBlocks.allSatisfy { $0.reason == .natIpRemoved && $0.range.natIp.description == Fixture.ip(50) })
  }

  @Test func movingASubnetOutOfTheSelectionEndsItsVmsMappings() throws {
    let listed = NATGateway(
      name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s1"), .init(name: "s2")],
      natIpAllocateOption: .manualOnly, natIps: [Fixture.ip(1)])
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [listed], instances: [Fixture.vm(1), Fixture.vm(2, subnet: "s2")]))
    let kept = planner.ports("vm1")
    var narrowed = listed
    narrowed.subnetworks = [.init(name: "s1")]
    let summary = try planner.apply(.upsertNatGateway(narrowed))
    #expect(summary.changedInstances == ["vm2"])
    #expect(summary.quarantined.first?.reason == .noLongerTranslated)
    #expect(planner.ports("vm1") == kept)
    #expect(planner.allocations(instance: "vm2").isEmpty)
  }

  @Test func updatingAnInstanceKeepsItsPortsUnlessItLeavesTheGateway() throws {
    var planner = try NATPlanner(intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: Fixture.vms(0..<3)))
    let ports = planner.ports("vm1")
    var moved = Fixture.vm(1, host: "elsewhere")
    moved.networkInterfaces[0].aliasIpRanges = [AliasIPRange(ipCidrRange: "10.100.1.0/24", subnetworkRangeName: "pods")]
    let summary = try planner.upsertInstance(moved)
    #expect(summary.changedInstances == ["vm1"] && summary.quarantined.isEmpty)
    #expect(planner.ports("vm1") == ports)
    #expect(planner.allocations(host: "elsewhere").map(\.nic.instance) == ["vm1"])
    // An external IP on a NIC without aliases takes it out of NAT altogether.
    let removed = try planner.upsertInstance(Fixture.vm(1, externalIP: "198.51.100.1"))
    #expect(removed.quarantined.map(\.range.description) == ports)
    #expect(planner.allocations(instance: "vm1").isEmpty)
  }
}
