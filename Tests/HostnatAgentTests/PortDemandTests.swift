import HostnatAddressing
import HostnatAgent
import HostnatEngine
import HostnatPackets
import HostnatProto
import SwiftProtobuf
import Testing

@Suite struct PortDemandTests {
  /// vm-1 with two 64-port blocks under a gateway with dynamic port allocation (max 256).
  func config(dynamic: Bool = true) -> Hostnat_V1_HostConfig {
    var c = snapshot(version: 9)
    c.gateways[0].dynamicPortAllocation = dynamic
    c.gateways[0].maxPortsPerVm = 256
    c.vms[0].nics[0].natBindings[0].portBlocks = [
      .with { $0.natIp = "203.0.113.1"; $0.firstPort = 1024; $0.count = 64 },
      .with { $0.natIp = "203.0.113.1"; $0.firstPort = 2048; $0.count = 64 },
    ]
    return c
  }

  func flows(_ ports: Range<UInt16>, vm: String = "vm-1", remotePort: UInt16 = 7) -> [FlowSnapshot] {
    ports.map {
      FlowSnapshot(
        protocolNumber: 6, insideIP: IPv4Address(10, 240, 0, 2), insidePort: 40_000 &+ $0, remoteIP: IPv4Address(192, 0, 2, 10),
        remotePort: remotePort, natIP: IPv4Address(203, 0, 113, 1), natPort: $0, expiresAt: 0, vmID: vm)
    }
  }

  @Test func usageCountsPortsIdleBlocksAndTheBusiestDestination() throws {
    let usage = try #require(PortDemand.usage(config(), flows: flows(1024..<1074)).first)
    #expect(usage.instance == "vm-1" && usage.nic == "nic0")
    #expect(usage.allocated == 128)
    #expect(usage.inUse == 50)
    #expect(usage.maxConnectionsToOneDestination == 50)
    #expect(usage.idleBlocks.map(\.firstPort) == [2048], "the second block carries no flow")
    #expect(PortDemand.usage(config(dynamic: false), flows: flows(1024..<1074)).isEmpty, "only gateways with dynamic allocation")
  }

  @Test(arguments: [
    (80, false, false), (102, false, false), (103, false, true), (10, true, true),
  ])
  func asksWhenNearFullOrFailing(inUse: Int, failuresGrew: Bool, expected: Bool) throws {
    let usage = try #require(PortDemand.usage(config(), flows: flows(1024..<UInt16(1024 + min(inUse, 64))) + flows(2048..<UInt16(2048 + max(0, inUse - 64)))).first)
    #expect(usage.inUse == inUse)
    #expect(PortDemand.needsMore(usage, allocationFailuresGrew: failuresGrew) == expected)
  }

  @Test func neverAsksAboveTheMaximum() throws {
    var c = config()
    c.gateways[0].maxPortsPerVm = 128
    let usage = try #require(PortDemand.usage(c, flows: flows(1024..<1088) + flows(2048..<2112)).first)
    #expect(!PortDemand.needsMore(usage, allocationFailuresGrew: true), "at max: stays capped")
  }

  @Test func reportCarriesWhatTheControllerReclaimsFrom() throws {
    let report = PortDemand.report(PortDemand.usage(config(), flows: flows(1024..<1030)), appliedVersion: 9)
    #expect(report.appliedVersion == 9)
    let nic = try #require(report.nics.first)
    #expect(nic.portsAllocated == 128 && nic.portsInUse == 6 && nic.idleBlocks.count == 1)
  }
}
