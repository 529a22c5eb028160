import HostnatAddressing
import HostnatController
import HostnatDesiredState
import HostnatPlanner
import HostnatProto
import SwiftProtobuf
import Testing

/// The admin API's resources reach the planner intact: names resolve, defaults stay defaults,
/// and the seed's example (one subnet NATed, one isolated) allocates as Cloud NAT would.
@Suite struct IntentMappingTests {
  /// The seed's layout: subnet-1 NATed through a manual pool named by reserved addresses,
  /// subnet-2 deliberately without NAT.
  func seedIntent() -> StoredIntent {
    var intent = StoredIntent()
    intent.networks = [.with { $0.name = "vpc" }]
    intent.subnets = [
      .with { $0.name = "subnet-1"; $0.network = "vpc"; $0.region = "us-east1"; $0.ipCidrRange = "10.240.0.0/24" },
      .with { $0.name = "subnet-2"; $0.network = "vpc"; $0.region = "us-east1"; $0.ipCidrRange = "172.16.0.0/24" },
    ]
    intent.addresses = [
      .with { $0.name = "nat-ip-1"; $0.region = "us-east1"; $0.address = "203.0.113.10" },
      .with { $0.name = "nat-ip-2"; $0.region = "us-east1"; $0.address = "203.0.113.11" },
    ]
    intent.routers = [
      .with {
        $0.name = "router-1"
        $0.network = "vpc"
        $0.region = "us-east1"
        $0.nats = [
          .with {
            $0.name = "nat-gw-us-east"
            $0.sourceSubnetworkIpRangesToNat = .listOfSubnetworks
            $0.subnetworks = [.with { $0.name = "subnet-1"; $0.sourceIpRangesToNat = [.allIpRanges] }]
            $0.natIpAllocateOption = .manualOnly
            $0.natIps = ["nat-ip-1", "203.0.113.11"]
            $0.logConfig = .with { $0.enable = true; $0.filter = .errorsOnly }
          }
        ]
      }
    ]
    intent.instances = [
      .with { $0.name = "vm-1"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1"; $0.networkIp = "10.240.0.2" }] },
      .with { $0.name = "vm-2"; $0.host = "host-b"; $0.networkInterfaces = [.with { $0.subnet = "subnet-2"; $0.networkIp = "172.16.0.2" }] },
    ]
    return intent
  }

  @Test func seedExampleAllocatesOnlyTheNatedSubnet() throws {
    let intent = try IntentMapping.natIntent(seedIntent(), autoPools: [:])
    let gateway = try #require(intent.natGateways.first)
    #expect(gateway.name == "us-east1/router-1/nat-gw-us-east")
    #expect(gateway.natIps == ["203.0.113.10", "203.0.113.11"])
    #expect(gateway.minPortsPerVm == nil, "an unset minimum stays unset so the planner's default applies")
    #expect(gateway.logConfig == .init(enable: true, filter: .errorsOnly))

    let planner = try NATPlanner(intent: intent)
    let vm1 = planner.allocations(instance: "vm-1")
    #expect(vm1.count == 1)
    #expect(vm1.first?.numTotalNatPorts == 64)
    #expect(vm1.first?.natIpPortRanges.allSatisfy { ["203.0.113.10", "203.0.113.11"].contains("\($0.natIp)") } == true)
    #expect(planner.allocations(instance: "vm-2").allSatisfy { $0.numTotalNatPorts == 0 })
    let status = try #require(planner.status(gateway: gateway.name))
    #expect(status.numVmEndpointsWithNatMappings == 1)
    #expect(status.userAllocatedNatIps.sorted() == ["203.0.113.10", "203.0.113.11"])
  }

  @Test func explicitSettingsReachThePlanner() throws {
    var stored = seedIntent()
    stored.routers[0].nats[0].minPortsPerVm = 100
    stored.routers[0].nats[0].timeouts.udpIdleTimeoutSec = 45
    stored.routers[0].nats[0].enableEndpointIndependentMapping = false
    stored.routers[0].nats[0].drainNatIps = ["nat-ip-2"]
    stored.routers[0].nats[0].natIps = ["nat-ip-1"]
    let gateway = try #require(try IntentMapping.natIntent(stored, autoPools: [:]).natGateways.first)
    #expect(gateway.minPortsPerVm == 100)
    #expect(gateway.udpIdleTimeoutSec == 45)
    #expect(gateway.tcpEstablishedIdleTimeoutSec == nil)
    #expect(gateway.enableEndpointIndependentMapping == false)
    #expect(gateway.drainNatIps == ["203.0.113.11"])
  }

  @Test func unsetSubnetSelectionIsRejectedWithTheField() throws {
    var stored = seedIntent()
    stored.routers[0].nats[0].sourceSubnetworkIpRangesToNat = .unspecified
    #expect {
      try IntentMapping.natIntent(stored, autoPools: [:])
    } throws: { error in
      (error as? PlannerValidationError)?.field == "routers[us-east1/router-1].nats[nat-gw-us-east].sourceSubnetworkIpRangesToNat"
    }
  }

  @Test func autoPoolsFeedAutoGateways() throws {
    var stored = seedIntent()
    stored.routers[0].nats[0].natIpAllocateOption = .autoOnly
    stored.routers[0].nats[0].natIps = []
    let intent = try IntentMapping.natIntent(stored, autoPools: ["us-east1": ["198.51.100.1", "198.51.100.2"]])
    let planner = try NATPlanner(intent: intent)
    let status = try #require(planner.status(gateway: "us-east1/router-1/nat-gw-us-east"))
    #expect(status.autoAllocatedNatIps == ["198.51.100.1"])
    #expect(planner.allocations(instance: "vm-1").first?.numTotalNatPorts == 64)
  }
}

/// What hosts and the edge receive for the seed's layout.
@Suite struct SnapshotBuilderTests {
  func planned() throws -> (StoredIntent, NATPlanner) {
    let stored = IntentMappingTests().seedIntent()
    return (stored, try NATPlanner(intent: try IntentMapping.natIntent(stored, autoPools: [:])))
  }

  @Test func eachHostGetsOnlyItsOwnVMs() throws {
    let (stored, planner) = try planned()
    let configs = SnapshotBuilder.hostConfigs(stored, planner: planner)
    #expect(configs.keys.sorted() == ["host-a", "host-b"])

    let hostA = try #require(configs["host-a"])
    #expect(hostA.vms.map(\.instance) == ["vm-1"])
    let nic = try #require(hostA.vms.first?.nics.first)
    #expect(nic.name == "nic0")
    #expect(nic.network == "vpc")
    #expect(nic.primaryIp == "10.240.0.2")
    let binding = try #require(nic.natBindings.first)
    #expect(nic.natBindings.count == 1)
    #expect(binding.gateway == "us-east1/router-1/nat-gw-us-east")
    #expect(binding.natSources.map(\.ipCidrRange) == ["10.240.0.2/32"])
    #expect(binding.portBlocks.reduce(0) { $0 + $1.count } == 64)
    #expect(binding.portBlocks.allSatisfy { $0.firstPort >= 1024 && !$0.drained })
    let gateway = try #require(hostA.gateways.first)
    #expect(hostA.gateways.count == 1)
    #expect(gateway.region == "us-east1" && gateway.router == "router-1" && gateway.name == "nat-gw-us-east")
    #expect(gateway.network == "vpc")
    #expect(gateway.timeouts.udpIdleTimeoutSec == 30)
    #expect(gateway.timeouts.tcpEstablishedIdleTimeoutSec == 1200)
    #expect(gateway.timeouts.tcpTimeWaitTimeoutSec == 120)
    #expect(gateway.endpointIndependentMapping)
    #expect(gateway.logConfig.enable && gateway.logConfig.filter == .errorsOnly)
    #expect(hostA.ownershipLeaseSec > 1200)

    // host-b runs the VM of the isolated subnet: it knows the VM, but has nothing to NAT with.
    let hostB = try #require(configs["host-b"])
    #expect(hostB.vms.map(\.instance) == ["vm-2"])
    #expect(hostB.vms.first?.nics.first?.natBindings.isEmpty == true)
    #expect(hostB.gateways.isEmpty)
  }

  @Test func edgeRoutesEveryBlockToItsHost() throws {
    let (stored, planner) = try planned()
    let edge = SnapshotBuilder.edgeConfig(stored, planner: planner, underlays: ["host-a": "127.0.0.1:7001"])
    let blocks = try #require(SnapshotBuilder.hostConfigs(stored, planner: planner)["host-a"]?.vms.first?.nics.first?.natBindings.first?.portBlocks)
    #expect(edge.natRoutes.map(\.natIp) == blocks.map(\.natIp))
    #expect(edge.natRoutes.map(\.firstPort) == blocks.map(\.firstPort))
    #expect(edge.natRoutes.allSatisfy { $0.hostID == "host-a" && $0.underlayAddress == "127.0.0.1:7001" })
    #expect(edge.externalRoutes.isEmpty)
  }

  /// Draining an IP keeps the VM's old block as a drained block (flows continue, and the edge
  /// still routes its replies) and gives the VM a new active block elsewhere.
  @Test func drainedBlocksStayInConfigAndRoutes() throws {
    var (stored, planner) = try planned()
    let before = try #require(SnapshotBuilder.hostConfigs(stored, planner: planner)["host-a"]?.vms[0].nics[0].natBindings[0].portBlocks[0])
    let other = before.natIp == "203.0.113.10" ? "203.0.113.11" : "203.0.113.10"
    stored.routers[0].nats[0].natIps = [other]
    stored.routers[0].nats[0].drainNatIps = [before.natIp]
    _ = try planner.apply(try IntentMapping.natIntent(stored, autoPools: [:]))
    let blocks = try #require(SnapshotBuilder.hostConfigs(stored, planner: planner)["host-a"]?.vms[0].nics[0].natBindings[0].portBlocks)
    #expect(blocks.contains { $0.drained && $0.natIp == before.natIp && $0.firstPort == before.firstPort })
    #expect(blocks.contains { !$0.drained && $0.natIp != before.natIp })
    let edge = SnapshotBuilder.edgeConfig(stored, planner: planner, underlays: ["host-a": "127.0.0.1:7001"])
    #expect(edge.natRoutes.contains { $0.natIp == before.natIp && $0.firstPort == before.firstPort })
  }

  /// A host that never connected has no underlay address: the edge gets no route to nowhere
  /// (it would NACK it), and the routes appear once the host says hello.
  @Test func hostsWithoutUnderlayGetNoRoutesYet() throws {
    let (stored, planner) = try planned()
    #expect(SnapshotBuilder.edgeConfig(stored, planner: planner, underlays: [:]).natRoutes.isEmpty)
    #expect(SnapshotBuilder.edgeConfig(stored, planner: planner, underlays: ["host-a": ""]).natRoutes.isEmpty)
    #expect(!SnapshotBuilder.edgeConfig(stored, planner: planner, underlays: ["host-a": "127.0.0.1:7001"]).natRoutes.isEmpty)
  }
}
