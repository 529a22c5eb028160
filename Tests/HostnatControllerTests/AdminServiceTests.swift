import Foundation
import GRPCCore
import GRPCInProcessTransport
import HostnatController
import HostnatDesiredState
import HostnatProto
import SwiftProtobuf
import Testing

/// The admin API over grpc-swift's in-process transport: the seed's setup built call by call,
/// then every kind of refusal with its status code and field.
@Suite(.timeLimit(.minutes(1)))
struct AdminServiceTests {
  func withAdmin(_ body: @Sendable (Hostnat_V1_AdminService.Client<InProcessTransport.Client>, ControllerCore) async throws -> Void) async throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    let core = try ControllerCore(
      store: store, sessions: ControlSessions(), autoPools: ["us-east1": ["198.51.100.1"]])
    let transport = InProcessTransport()
    try await withGRPCServer(transport: transport.server, services: [AdminService(core: core)]) { _ in
      try await withGRPCClient(transport: transport.client) { client in
        try await body(Hostnat_V1_AdminService.Client(wrapping: client), core)
      }
    }
  }

  /// The seed's example: subnet-1 NATed through one reserved address, subnet-2 without NAT.
  func buildSeed(_ admin: Hostnat_V1_AdminService.Client<InProcessTransport.Client>) async throws {
    _ = try await admin.createNetwork(.with { $0.network.name = "vpc" })
    _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "subnet-1"; $0.network = "vpc"; $0.region = "us-east1"; $0.ipCidrRange = "10.240.0.0/24" } })
    _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "subnet-2"; $0.network = "vpc"; $0.region = "us-east1"; $0.ipCidrRange = "172.16.0.0/24" } })
    _ = try await admin.createRouter(.with { $0.router = .with { $0.name = "router-1"; $0.network = "vpc"; $0.region = "us-east1" } })
    let address = try await admin.createAddress(.with { $0.address = .with { $0.name = "nat-ip"; $0.region = "us-east1" } })
    #expect(address.address == "203.0.113.1", "the first free documentation address")
    _ = try await admin.createNat(.with {
      $0.region = "us-east1"
      $0.router = "router-1"
      $0.nat = .with {
        $0.name = "nat-gw"
        $0.sourceSubnetworkIpRangesToNat = .listOfSubnetworks
        $0.subnetworks = [.with { $0.name = "subnet-1"; $0.sourceIpRangesToNat = [.allIpRanges] }]
        $0.natIpAllocateOption = .manualOnly
        $0.natIps = ["nat-ip"]
      }
    })
    let vm1 = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-1"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }] } })
    #expect(vm1.networkInterfaces.first?.networkIp == "10.240.0.2", "the first free address after the gateway")
    #expect(vm1.region == "us-east1")
    _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-2"; $0.host = "host-b"; $0.networkInterfaces = [.with { $0.subnet = "subnet-2" }] } })
  }

  @Test func seedSetupStatusMappingAndWhoHad() async throws {
    try await withAdmin { admin, core in
      try await buildSeed(admin)
      let status = try await admin.getRouterStatus(.with { $0.region = "us-east1"; $0.name = "router-1" })
      #expect(status.result.natStatus.map(\.name) == ["nat-gw"])
      #expect(status.result.natStatus.first?.userAllocatedNatIps == ["203.0.113.1"])
      #expect(status.result.natStatus.first?.numVmEndpointsWithNatMappings == 1)
      #expect(status.result.natStatus.first?.minExtraNatIpsNeeded == 0)

      let info = try await admin.getNatMappingInfo(.with { $0.region = "us-east1"; $0.router = "router-1" })
      #expect(info.result.map(\.instanceName) == ["vm-1"], "vm-2's subnet has no NAT")
      let mapping = try #require(info.result.first?.interfaceNatMappings.first)
      #expect(mapping.sourceVirtualIp == "10.240.0.2")
      #expect(mapping.numTotalNatPorts == 64)
      let range = try #require(mapping.natIpPortRanges.first)
      #expect(range.hasPrefix("203.0.113.1:"))

      let firstPort = try #require(UInt32(range.split(separator: ":")[1].split(separator: "-")[0]))
      let who = try await admin.whoHad(.with { $0.natIp = "203.0.113.1"; $0.port = firstPort + 5 })
      #expect(who.found && who.instance == "vm-1" && who.host == "host-a" && who.interface == "nic0")
      #expect(who.natIpPortRange == range)
      let nobody = try await admin.whoHad(.with { $0.natIp = "203.0.113.99"; $0.port = 2000 })
      #expect(!nobody.found)

      let address = try await admin.getAddress(.with { $0.region = "us-east1"; $0.name = "nat-ip" })
      #expect(address.status == .inUse && address.user == "routers/router-1/nats/nat-gw")
      let hosts = try await admin.listHosts(.init())
      #expect(hosts.hosts.map(\.hostID) == ["host-a", "host-b"])
      #expect(hosts.hosts.first?.latestVersion ?? 0 > 0)
      #expect(hosts.hosts.first?.instances == 1)
      #expect(core.intent.instances.count == 2)
    }
  }

  /// Each refusal: the status code, the field in the message, and nothing changed.
  @Test func refusalsNameTheFieldAndChangeNothing() async throws {
    try await withAdmin { admin, core in
      try await buildSeed(admin)
      let before = core.intent
      let versions = try core.store.read { try $0.versionCounter() }

      await expectRefused(.invalidArgument, "network.name") { _ = try await admin.createNetwork(.with { $0.network.name = "Bad_Name" }) }
      await expectRefused(.alreadyExists, "network.name") { _ = try await admin.createNetwork(.with { $0.network.name = "vpc" }) }
      await expectRefused(.notFound, "subnet.network") {
        _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "s3"; $0.network = "nope"; $0.region = "us-east1"; $0.ipCidrRange = "10.9.0.0/24" } })
      }
      await expectRefused(.invalidArgument, "ipCidrRange") {
        _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "s3"; $0.network = "vpc"; $0.region = "us-east1"; $0.ipCidrRange = "10.240.0.128/25" } })
      }
      await expectRefused(.failedPrecondition, "name") { _ = try await admin.deleteNetwork(.with { $0.name = "vpc" }) }
      await expectRefused(.failedPrecondition, "name") { _ = try await admin.deleteSubnet(.with { $0.name = "subnet-1" }) }
      await expectRefused(.failedPrecondition, "name") { _ = try await admin.deleteAddress(.with { $0.region = "us-east1"; $0.name = "nat-ip" }) }
      await expectRefused(.notFound, "nat.natIps[0]") {
        _ = try await admin.updateNat(.with {
          $0.region = "us-east1"; $0.router = "router-1"
          $0.nat = .with { $0.name = "nat-gw"; $0.natIps = ["203.0.113.77"] }
          $0.updateMask = ["nat_ips"]
        })
      }
      await expectRefused(.invalidArgument, "nat-gw") {
        _ = try await admin.updateNat(.with {
          $0.region = "us-east1"; $0.router = "router-1"
          $0.nat = .with { $0.name = "nat-gw"; $0.enableDynamicPortAllocation = true; $0.enableEndpointIndependentMapping = true }
          $0.updateMask = ["enable_dynamic_port_allocation", "enable_endpoint_independent_mapping"]
        })
      }
      await expectRefused(.invalidArgument, "updateMask") {
        _ = try await admin.updateNat(.with { $0.region = "us-east1"; $0.router = "router-1"; $0.nat.name = "nat-gw"; $0.updateMask = ["name"] })
      }
      await expectRefused(.notFound, "router") { _ = try await admin.getRouterStatus(.with { $0.region = "us-east1"; $0.name = "nope" }) }
      await expectRefused(.invalidArgument, "instance.networkInterfaces") {
        _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-9"; $0.host = "host-a" } })
      }
      await expectRefused(.invalidArgument, "port") { _ = try await admin.whoHad(.with { $0.natIp = "203.0.113.1"; $0.port = 80 }) }

      #expect(core.intent == before)
      #expect(try core.store.read { try $0.versionCounter() } == versions)
    }
  }

  /// Draining through UpdateNat keeps the VM's old block as a drained range and gives it a new
  /// active one, as get-nat-mapping-info shows.
  @Test func drainThroughUpdateNat() async throws {
    try await withAdmin { admin, _ in
      try await buildSeed(admin)
      _ = try await admin.createAddress(.with { $0.address = .with { $0.name = "nat-ip-2"; $0.region = "us-east1" } })
      let updated = try await admin.updateNat(.with {
        $0.region = "us-east1"; $0.router = "router-1"
        $0.nat = .with { $0.name = "nat-gw"; $0.natIps = ["nat-ip-2"]; $0.drainNatIps = ["nat-ip"] }
        $0.updateMask = ["nat_ips", "drain_nat_ips"]
      })
      #expect(updated.drainNatIps == ["nat-ip"])
      let mapping = try #require(try await admin.getNatMappingInfo(.with { $0.region = "us-east1"; $0.router = "router-1" }).result.first?.interfaceNatMappings.first)
      #expect(mapping.drainNatIpPortRanges.first?.hasPrefix("203.0.113.1:") == true)
      #expect(mapping.natIpPortRanges.first?.hasPrefix("203.0.113.2:") == true)
      #expect(mapping.numTotalDrainNatPorts == 64)
    }
  }
}
