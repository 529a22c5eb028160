import HostnatAddressing
import Foundation
import GRPCCore
import GRPCInProcessTransport
import HostnatController
import HostnatDesiredState
import HostnatProto
import SwiftProtobuf
import Testing

/// A refused admin call: its status code, and its message names the field.
func expectRefused(_ code: RPCError.Code, _ field: String, _ call: () async throws -> Void) async {
  do {
    try await call()
    Issue.record("accepted; expected \(code) on \(field)")
  } catch let error as RPCError {
    #expect(error.code == code, "\(error)")
    #expect(error.message.contains(field), "\(error.message) should name \(field)")
  } catch {
    Issue.record("unexpected \(error)")
  }
}

/// The network around NAT as the controller decides it: what hosts and the edge receive for
/// firewall rules, routes, Private Google Access, projects/Shared VPC, peering, NAT rules and
/// serverless egress, and every refusal with its field.
@Suite(.timeLimit(.minutes(1)))
struct VPCTests {
  typealias Admin = Hostnat_V1_AdminService.Client<InProcessTransport.Client>

  func withAdmin(_ body: @Sendable (Admin, ControllerCore) async throws -> Void) async throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    let core = try ControllerCore(
      store: store, sessions: ControlSessions(), autoPools: [:])
    let transport = InProcessTransport()
    try await withGRPCServer(transport: transport.server, services: [AdminService(core: core)]) { _ in
      try await withGRPCClient(transport: transport.client) { client in
        try await body(Hostnat_V1_AdminService.Client(wrapping: client), core)
      }
    }
  }

  /// vpc: subnet-1 (10.240.0.0/24) NATed by nat-1 through 203.0.113.1, subnet-2 (172.16.0.0/24)
  /// not NATed; vm-1 in subnet-1 on host-a, vm-2 in subnet-2 on host-b.
  func build(_ admin: Admin, googleRange: String = "") async throws {
    _ = try await admin.createNetwork(.with { $0.network.name = "vpc"; $0.network.googleApisRange = googleRange })
    _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "subnet-1"; $0.network = "vpc"; $0.region = "r1"; $0.ipCidrRange = "10.240.0.0/24" } })
    _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "subnet-2"; $0.network = "vpc"; $0.region = "r1"; $0.ipCidrRange = "172.16.0.0/24" } })
    _ = try await admin.createRouter(.with { $0.router = .with { $0.name = "router-1"; $0.network = "vpc"; $0.region = "r1" } })
    for (name, ip) in [("nat-ip", "203.0.113.1"), ("rule-ip", "203.0.113.2"), ("rule-ip-2", "203.0.113.3")] {
      _ = try await admin.createAddress(.with { $0.address = .with { $0.name = name; $0.region = "r1"; $0.address = ip } })
    }
    _ = try await admin.createNat(.with {
      $0.region = "r1"
      $0.router = "router-1"
      $0.nat = .with {
        $0.name = "nat-1"
        $0.sourceSubnetworkIpRangesToNat = .listOfSubnetworks
        $0.subnetworks = [.with { $0.name = "subnet-1"; $0.sourceIpRangesToNat = [.allIpRanges] }]
        $0.natIpAllocateOption = .manualOnly
        $0.natIps = ["nat-ip"]
      }
    })
    _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-1"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }] } })
    _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-2"; $0.host = "host-b"; $0.networkInterfaces = [.with { $0.subnet = "subnet-2" }] } })
  }

  func config(_ core: ControllerCore, _ host: String) throws -> Hostnat_V1_HostConfig {
    try #require(try core.store.read { try $0.hostConfig(host) })
  }

  @Test func firewallRulesAndRoutesReachTheHostsOfTheirNetwork() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      _ = try await admin.createNetwork(.with { $0.network.name = "other" })
      _ = try await admin.createFirewallRule(.with {
        $0.rule = .with {
          $0.name = "deny-dns"
          $0.network = "vpc"
          $0.direction = .egress
          $0.priority = 900
          $0.rules = [.with { $0.ipProtocol = "udp"; $0.ports = ["53"] }]
          $0.destinationRanges = ["192.0.2.0/24"]
          $0.enableLogging = true
        }
      })
      _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "elsewhere"; $0.network = "other"; $0.allow = true; $0.rules = [.with { $0.ipProtocol = "tcp" }] } })
      let outcome = try await admin.createRoute(.with {
        $0.route = .with { $0.name = "to-nat-vm"; $0.network = "vpc"; $0.destRange = "198.51.100.0/24"; $0.nextHop.instance = "vm-2" }
      })
      #expect(outcome.priority == 1000, "default priority")
      let a = try config(core, "host-a")
      #expect(a.firewallRules.map(\.name) == ["deny-dns"], "only the rules of vpc, where host-a's VM is")
      #expect(a.firewallRules.first?.direction == .egress && a.firewallRules.first?.enableLogging == true)
      #expect(a.routes.map(\.name) == ["to-nat-vm"])
      #expect(try config(core, "host-b").firewallRules.map(\.name) == ["deny-dns"])

      let list = try await admin.listFirewallRules(.with { $0.network = "vpc" })
      #expect(list.rules.map(\.name) == ["deny-dns"])
      _ = try await admin.deleteFirewallRule(.with { $0.name = "deny-dns" })
      #expect(try config(core, "host-a").firewallRules.isEmpty, "a deleted rule leaves the hosts")

      await expectRefused(.invalidArgument, "firewallRules[bad].rules[0].ipProtocol") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "vpc"; $0.rules = [.with { $0.ipProtocol = "sctpx" }] } })
      }
      await expectRefused(.invalidArgument, "firewallRules[bad].rules[0].ports[0]") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "vpc"; $0.rules = [.with { $0.ipProtocol = "tcp"; $0.ports = ["90-80"] }] } })
      }
      await expectRefused(.invalidArgument, "firewallRules[bad].sourceRanges[0]") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "vpc"; $0.sourceRanges = ["10.0.0.1/8"] } })
      }
      await expectRefused(.invalidArgument, "firewallRules[bad].sourceRanges") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "vpc"; $0.direction = .egress; $0.sourceRanges = ["10.0.0.0/8"] } })
      }
      await expectRefused(.failedPrecondition, "firewallRules[bad].network") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "nope" } })
      }
      await expectRefused(.failedPrecondition, "routes[bad].nextHop.instance") {
        _ = try await admin.createRoute(.with { $0.route = .with { $0.name = "bad"; $0.network = "vpc"; $0.destRange = "0.0.0.0/0"; $0.nextHop.instance = "ghost" } })
      }
      await expectRefused(.invalidArgument, "routes[bad].nextHop") {
        _ = try await admin.createRoute(.with { $0.route = .with { $0.name = "bad"; $0.network = "vpc"; $0.destRange = "0.0.0.0/0" } })
      }
      await expectRefused(.alreadyExists, "route.name") {
        _ = try await admin.createRoute(.with { $0.route = .with { $0.name = "to-nat-vm"; $0.network = "vpc"; $0.destRange = "0.0.0.0/0"; $0.nextHop.defaultInternetGateway = true } })
      }
      #expect(try await admin.listRoutes(.init()).routes.count == 1, "refusals changed nothing")
    }
  }

  @Test func targetTagsAndInstanceTagsReachTheHosts() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      _ = try await admin.createFirewallRule(.with {
        $0.rule = .with { $0.name = "web"; $0.network = "vpc"; $0.allow = true; $0.rules = [.with { $0.ipProtocol = "tcp"; $0.ports = ["80"] }]; $0.targetTags = ["http-server"] }
      })
      let tagged = try await admin.createInstance(.with {
        $0.instance = .with { $0.name = "vm-3"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }]; $0.tags = ["http-server", "blue", "http-server"] }
      })
      #expect(tagged.tags == ["http-server", "blue"], "repeats are dropped, order kept")
      #expect(try config(core, "host-a").firewallRules.first?.targetTags == ["http-server"])
      #expect(try config(core, "host-a").vms.first { $0.instance == "vm-3" }?.tags == ["http-server", "blue"])
      #expect(try config(core, "host-a").vms.first { $0.instance == "vm-1" }?.tags == [])

      let before = try config(core, "host-a").version
      let retagged = try await admin.updateInstanceTags(.with { $0.name = "vm-1"; $0.add = ["http-server", "green"]; $0.remove = ["nothing-here"] })
      #expect(retagged.tags == ["http-server", "green"])
      let after = try config(core, "host-a")
      #expect(after.version > before && after.vms.first { $0.instance == "vm-1" }?.tags == ["http-server", "green"], "a tag change is pushed")
      #expect(try await admin.updateInstanceTags(.with { $0.name = "vm-1"; $0.remove = ["green"]; $0.add = ["green"] }).tags == ["http-server", "green"], "remove, then add")
      #expect(try await admin.updateInstanceTags(.with { $0.name = "vm-1"; $0.remove = ["http-server"] }).tags == ["green"])

      await expectRefused(.invalidArgument, "instance.tags[0]") {
        _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "vm-4"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }]; $0.tags = ["Web"] } })
      }
      await expectRefused(.invalidArgument, "instance.tags") {
        _ = try await admin.createInstance(.with {
          $0.instance = .with { $0.name = "vm-4"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }]; $0.tags = (0...64).map { "t\($0)" } }
        })
      }
      await expectRefused(.invalidArgument, "add[1]") { _ = try await admin.updateInstanceTags(.with { $0.name = "vm-1"; $0.add = ["ok", "-bad"] }) }
      await expectRefused(.notFound, "name") { _ = try await admin.updateInstanceTags(.with { $0.name = "ghost"; $0.add = ["ok"] }) }
      await expectRefused(.invalidArgument, "firewallRules[bad].targetTags[0]") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "bad"; $0.network = "vpc"; $0.targetTags = ["under_score"] } })
      }
      // Hosts keep one bit per target tag of a network: the 65th distinct one is refused.
      for i in 0..<31 {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "r\(i)"; $0.network = "vpc"; $0.targetTags = ["a\(i)", "b\(i)"] } })
      }
      await expectRefused(.invalidArgument, "firewallRules[too-many].targetTags") {
        _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "too-many"; $0.network = "vpc"; $0.targetTags = ["c1", "c2"] } })
      }
      _ = try await admin.createFirewallRule(.with { $0.rule = .with { $0.name = "last"; $0.network = "vpc"; $0.targetTags = ["c1", "http-server"] } })
      #expect(try await admin.getInstance(.with { $0.name = "vm-1" }).tags == ["green"], "refusals changed nothing")
    }
  }

  @Test func privateGoogleAccessIsForcedOnWhereNatTranslatesAndRoutedAtTheEdge() async throws {
    try await withAdmin { admin, core in
      try await build(admin, googleRange: "198.51.100.8/30")
      let a = try config(core, "host-a")
      let b = try config(core, "host-b")
      #expect(a.vms.first?.nics.first?.privateGoogleAccess == true, "subnet-1's primary range is NATed, so PGA is on")
      #expect(b.vms.first?.nics.first?.privateGoogleAccess == false, "subnet-2 has no NAT and did not ask for PGA")
      #expect(a.googleApisRanges == ["vpc": "198.51.100.8/30"])
      let subnet = try await admin.getSubnet(.with { $0.name = "subnet-1"; $0.region = "r1" })
      #expect(subnet.privateIpGoogleAccess, "the API shows it on")
      await expectRefused(.failedPrecondition, "subnet.privateIpGoogleAccess") {
        _ = try await admin.updateSubnet(.with { $0.subnet.name = "subnet-1"; $0.updateMask = ["private_ip_google_access"] })
      }
      _ = try await admin.updateSubnet(.with { $0.subnet.name = "subnet-2"; $0.subnet.privateIpGoogleAccess = true; $0.updateMask = ["private_ip_google_access"] })
      #expect(try config(core, "host-b").vms.first?.nics.first?.privateGoogleAccess == true, "asked for on subnet-2")

      let edge = SnapshotBuilder.edgeConfig(core.intent, planner: core.planner, underlays: ["host-a": "127.0.0.1:1", "host-b": "127.0.0.1:2"])
      #expect(edge.privateGoogleAccessRoutes.map { "\($0.externalIp)>\($0.hostID)" } == ["10.240.0.2>host-a", "172.16.0.2>host-b"])
      await expectRefused(.invalidArgument, "networks[vpc].googleApisRange") {
        _ = try await admin.updateNetwork(.with { $0.network.name = "vpc"; $0.network.googleApisRange = "198.51.100.9/30"; $0.updateMask = ["google_apis_range"] })
      }
    }
  }

  @Test func sharedVPCGatewaysLiveInTheHostProjectAndServiceProjectsAttach() async throws {
    try await withAdmin { admin, core in
      _ = try await admin.createProject(.with { $0.project = .with { $0.id = "host-proj"; $0.sharedVpcHost = true } })
      _ = try await admin.createProject(.with { $0.project = .with { $0.id = "svc-proj"; $0.sharedVpcHostProject = "host-proj" } })
      _ = try await admin.createProject(.with { $0.project = .with { $0.id = "lone-proj" } })
      await expectRefused(.failedPrecondition, "projects[bad].sharedVpcHostProject") {
        _ = try await admin.createProject(.with { $0.project = .with { $0.id = "bad"; $0.sharedVpcHostProject = "lone-proj" } })
      }
      _ = try await admin.createNetwork(.with { $0.network.name = "shared"; $0.network.project = "host-proj" })
      _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "s1"; $0.network = "shared"; $0.region = "r1"; $0.ipCidrRange = "10.1.0.0/24" } })
      await expectRefused(.failedPrecondition, "routers[r-svc].project") {
        _ = try await admin.createRouter(.with { $0.router = .with { $0.name = "r-svc"; $0.network = "shared"; $0.region = "r1"; $0.project = "svc-proj" } })
      }
      _ = try await admin.createRouter(.with { $0.router = .with { $0.name = "r-host"; $0.network = "shared"; $0.region = "r1"; $0.project = "host-proj" } })
      _ = try await admin.createAddress(.with { $0.address = .with { $0.name = "ip"; $0.region = "r1"; $0.address = "203.0.113.7" } })
      _ = try await admin.createNat(.with {
        $0.region = "r1"
        $0.router = "r-host"
        $0.nat = .with { $0.name = "nat"; $0.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges; $0.natIpAllocateOption = .manualOnly; $0.natIps = ["ip"] }
      })
      _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "svc-vm"; $0.host = "h"; $0.project = "svc-proj"; $0.networkInterfaces = [.with { $0.subnet = "s1" }] } })
      await expectRefused(.failedPrecondition, "instances[lone-vm].networkInterfaces[0].project") {
        _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "lone-vm"; $0.host = "h"; $0.project = "lone-proj"; $0.networkInterfaces = [.with { $0.subnet = "s1" }] } })
      }
      let blocks = try config(core, "h").vms.first { $0.instance == "svc-vm" }?.nics.first?.natBindings.first?.portBlocks ?? []
      #expect(blocks.first?.natIp == "203.0.113.7", "the host project's gateway NATs the service project's VM")
    }
  }

  @Test func peeringDoesNotCarryNat() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      _ = try await admin.createNetwork(.with { $0.network.name = "peer" })
      _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "p1"; $0.network = "peer"; $0.region = "r1"; $0.ipCidrRange = "10.50.0.0/24" } })
      _ = try await admin.updateNetwork(.with { $0.network.name = "vpc"; $0.network.peerNetworks = ["peer"]; $0.updateMask = ["peer_networks"] })
      _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "peer-vm"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "p1" }] } })
      let vm = try #require(try config(core, "host-a").vms.first { $0.instance == "peer-vm" })
      #expect(vm.nics.first?.natBindings.isEmpty == true, "vpc's gateway never translates a peered network's subnets")
      await expectRefused(.invalidArgument, "networks[vpc].peerNetworks[0]") {
        _ = try await admin.updateNetwork(.with { $0.network.name = "vpc"; $0.network.peerNetworks = ["vpc"]; $0.updateMask = ["peer_networks"] })
      }
      await expectRefused(.failedPrecondition, "networks[vpc].peerNetworks[0]") {
        _ = try await admin.updateNetwork(.with { $0.network.name = "vpc"; $0.network.peerNetworks = ["ghost"]; $0.updateMask = ["peer_networks"] })
      }
    }
  }

  /// Peering carries subnet routes: hosts learn the peer's ranges as internal (never NATed) and
  /// the edge's fabric routes each network's view, peers included, non-peered networks not.
  @Test func peeringCarriesSubnetRoutesIntoTheFabric() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      _ = try await admin.createNetwork(.with { $0.network.name = "peer" })
      _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "p1"; $0.network = "peer"; $0.region = "r1"; $0.ipCidrRange = "10.50.0.0/24" } })
      _ = try await admin.createNetwork(.with { $0.network.name = "lonely" })
      _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "l1"; $0.network = "lonely"; $0.region = "r1"; $0.ipCidrRange = "10.70.0.0/24" } })
      _ = try await admin.updateNetwork(.with { $0.network.name = "vpc"; $0.network.peerNetworks = ["peer"]; $0.updateMask = ["peer_networks"] })
      _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "peer-vm"; $0.host = "host-b"; $0.networkInterfaces = [.with { $0.subnet = "p1" }] } })
      _ = try await admin.createInstance(.with { $0.instance = .with { $0.name = "lonely-vm"; $0.host = "host-b"; $0.networkInterfaces = [.with { $0.subnet = "l1" }] } })
      let hostA = try config(core, "host-a")
      let ids = VPCFabric.ids(core.intent)
      let vpc = try #require(hostA.vpcNetworks.first { $0.network == "vpc" })
      #expect(vpc.id == ids["vpc"] && vpc.id != 0)
      #expect(vpc.internalRanges.contains("10.50.0.0/24"), "the peer's subnet is a subnet route of vpc: \(vpc.internalRanges)")
      #expect(!vpc.internalRanges.contains("10.70.0.0/24"))
      let subnet1 = try #require(core.intent.subnets.first { $0.name == "subnet-1" })
      #expect(vpc.internalRanges.contains(subnet1.ipCidrRange))
      // Peering is symmetric once either side lists it.
      #expect(VPCFabric.internalRanges("peer", core.intent).contains(subnet1.ipCidrRange))

      let underlays = ["host-a": "127.0.0.1:4001", "host-b": "127.0.0.1:4002"]
      let routes = VPCFabric.routes(core.intent, underlays: underlays, ids: ids)
      func owners(_ network: String) -> Set<String> { Set(routes.filter { $0.networkID == ids[network] }.map(\.instance)) }
      #expect(owners("vpc").contains("peer-vm") && !owners("vpc").contains("lonely-vm"))
      #expect(owners("peer").contains("peer-vm") && owners("peer").isSuperset(of: owners("vpc")))
      #expect(owners("lonely") == ["lonely-vm"])
      let peerVM = try #require(routes.first { $0.instance == "peer-vm" && $0.networkID == ids["vpc"] })
      #expect(peerVM.hostID == "host-b" && peerVM.underlayAddress == "127.0.0.1:4002" && peerVM.destination.hasSuffix("/32"))
      // A host that never said hello has no fabric routes yet.
      #expect(VPCFabric.routes(core.intent, underlays: ["host-a": "127.0.0.1:4001"], ids: ids).allSatisfy { $0.hostID == "host-a" })
    }
  }

  @Test func multipleNicsAreNatedByTheirOwnNetworksGateways() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      _ = try await admin.createNetwork(.with { $0.network.name = "net2" })
      _ = try await admin.createSubnet(.with { $0.subnet = .with { $0.name = "n2"; $0.network = "net2"; $0.region = "r1"; $0.ipCidrRange = "10.60.0.0/24" } })
      _ = try await admin.createRouter(.with { $0.router = .with { $0.name = "router-2"; $0.network = "net2"; $0.region = "r1" } })
      _ = try await admin.createAddress(.with { $0.address = .with { $0.name = "ip2"; $0.region = "r1"; $0.address = "203.0.113.20" } })
      _ = try await admin.createNat(.with {
        $0.region = "r1"
        $0.router = "router-2"
        $0.nat = .with { $0.name = "nat-2"; $0.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges; $0.natIpAllocateOption = .manualOnly; $0.natIps = ["ip2"] }
      })
      _ = try await admin.createInstance(.with {
        $0.instance = .with { $0.name = "two-nic"; $0.host = "host-a"; $0.networkInterfaces = [.with { $0.subnet = "subnet-1" }, .with { $0.subnet = "n2" }] }
      })
      let vm = try #require(try config(core, "host-a").vms.first { $0.instance == "two-nic" })
      #expect(vm.nics.map(\.network) == ["vpc", "net2"])
      #expect(vm.nics.map { $0.natBindings.first?.gateway ?? "" } == ["r1/router-1/nat-1", "r1/router-2/nat-2"])
      #expect(vm.nics.map { $0.natBindings.first?.portBlocks.first?.natIp ?? "" } == ["203.0.113.1", "203.0.113.20"])
    }
  }

  @Test func natRulesGiveEveryVMBlocksOnTheRuleIPsAndTheEdgeRoutesThem() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      var nat = try await admin.getNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.name = "nat-1" })
      nat.rules = [.with {
        $0.ruleNumber = 100
        $0.match = #"destination.ip == "192.0.2.20" || inIpRange(destination.ip, "198.51.100.0/28")"#
        $0.sourceNatActiveIps = ["rule-ip"]
      }]
      _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = nat; $0.updateMask = ["rules"] })
      let a = try config(core, "host-a")
      let gateway = try #require(a.gateways.first)
      #expect(gateway.rules.map(\.ruleNumber) == [100])
      #expect(gateway.rules.first?.destinationRanges == ["192.0.2.20/32", "198.51.100.0/28"], "hosts get the match compiled")
      let blocks = a.vms.first?.nics.first?.natBindings.first?.portBlocks ?? []
      #expect(Set(blocks.map { "\($0.natIp)#\($0.ruleNumber)" }) == ["203.0.113.1#0", "203.0.113.2#100"])
      let edge = SnapshotBuilder.edgeConfig(core.intent, planner: core.planner, underlays: ["host-a": "127.0.0.1:1"])
      #expect(edge.natRoutes.contains { $0.natIp == "203.0.113.2" && $0.hostID == "host-a" }, "replies to the rule's IP come back")
      let address = try await admin.getAddress(.with { $0.region = "r1"; $0.name = "rule-ip" })
      #expect(address.status == .inUse)
      let status = try await admin.getRouterStatus(.with { $0.region = "r1"; $0.name = "router-1" })
      let ruleStatus = try #require(status.result.natStatus.first?.ruleStatus.first)
      #expect(ruleStatus.ruleNumber == 100 && ruleStatus.activeNatIps == ["203.0.113.2"] && ruleStatus.numVmEndpointsWithNatMappings == 1)
      let info = try await admin.getNatMappingInfo(.with { $0.region = "r1"; $0.router = "router-1" })
      let ruleMapping = try #require(info.result.first?.interfaceNatMappings.first?.ruleMappings.first)
      #expect(ruleMapping.ruleNumber == 100 && ruleMapping.numTotalNatPorts == 64 && ruleMapping.natIpPortRanges.first?.hasPrefix("203.0.113.2:") == true)

      var bad = nat
      bad.rules[0].match = #"destination.ip == "192.0.2.20" && true"#
      await expectRefused(.invalidArgument, "rules[100].match") {
        _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = bad; $0.updateMask = ["rules"] })
      }
      bad = nat
      bad.rules[0].sourceNatActiveIps = ["nat-ip"]
      await expectRefused(.invalidArgument, "rules[100]") {
        _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = bad; $0.updateMask = ["rules"] })
      }
      bad = nat
      bad.rules[0].sourceNatActiveIps = ["unreserved"]
      await expectRefused(.notFound, "nat.rules[100].sourceNatActiveIps") {
        _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = bad; $0.updateMask = ["rules"] })
      }
      // Draining the rule's IP keeps its blocks, marked drained.
      var drain = nat
      drain.rules[0].sourceNatActiveIps = ["rule-ip-2"]
      drain.rules[0].sourceNatDrainIps = ["rule-ip"]
      _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = drain; $0.updateMask = ["rules"] })
      let ruleBlocks: [Hostnat_V1_PortBlock] = try config(core, "host-a").vms.first?.nics.first?.natBindings.first?.portBlocks ?? []
      let drained = Set(ruleBlocks.filter { $0.ruleNumber == 100 }.map { "\($0.natIp)#\($0.drained)" })
      #expect(drained == ["203.0.113.2#true", "203.0.113.3#false"])
    }
  }

  @Test func connectorsScaleWithTheirServicesAndTheirInstancesNAT() async throws {
    try await withAdmin { admin, core in
      try await build(admin)
      // Every subnet of vpc NATed, so the connector's own subnet is too.
      var nat = try await admin.getNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.name = "nat-1" })
      nat.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges
      nat.subnetworks = []
      _ = try await admin.updateNat(.with { $0.region = "r1"; $0.router = "router-1"; $0.nat = nat; $0.updateMask = ["source_subnetwork_ip_ranges_to_nat", "subnetworks"] })
      let connector = try await admin.createServerlessConnector(.with {
        $0.connector = .with { $0.name = "conn"; $0.region = "r1"; $0.network = "vpc"; $0.ipCidrRange = "10.8.0.0/28"; $0.minInstances = 2; $0.maxInstances = 3; $0.hosts = ["host-a", "host-b"] }
      })
      #expect(connector.state == "READY" && connector.instances == ["conn-1", "conn-2"])
      let instances = try await admin.listInstances(.init()).instances.filter { $0.name.hasPrefix("conn-") }
      #expect(instances.map { "\($0.name)@\($0.host)=\($0.networkInterfaces.first?.networkIp ?? "")" } == ["conn-1@host-a=10.8.0.2", "conn-2@host-b=10.8.0.3"])
      #expect(try config(core, "host-b").vms.first { $0.instance == "conn-2" }?.nics.first?.natBindings.first?.portBlocks.isEmpty == false, "connector instances NAT like any VM")
      #expect(instances.allSatisfy { $0.tags == ["vpc-connector", "vpc-connector-r1-conn"] }, "Serverless VPC Access tags its connector instances")
      #expect(try config(core, "host-b").vms.first { $0.instance == "conn-2" }?.tags == ["vpc-connector", "vpc-connector-r1-conn"])

      let deployed = try await admin.deployService(.with { $0.service = .with { $0.name = "svc"; $0.region = "r1"; $0.instances = 9; $0.vpcConnector = "conn"; $0.vpcEgress = .allTraffic } })
      #expect(ServerlessModel.egressPool.contains(deployed.serverlessEgressIp))
      let grown = try await admin.getServerlessConnector(.with { $0.name = "conn"; $0.region = "r1" })
      #expect(grown.instances == ["conn-1", "conn-2", "conn-3"], "9 instances want 3 connector instances; max is 3")
      #expect(grown.load == 9)
      let redeployed = try await admin.deployService(.with { $0.service = .with { $0.name = "svc"; $0.region = "r1"; $0.instances = 1; $0.vpcConnector = "conn"; $0.vpcEgress = .allTraffic } })
      #expect(redeployed.serverlessEgressIp != deployed.serverlessEgressIp, "the platform egress IP is ephemeral")
      #expect(try await admin.getServerlessConnector(.with { $0.name = "conn" }).instances == ["conn-1", "conn-2"], "back to the minimum")

      // Where requests enter the network.
      let c = try await admin.getServerlessConnector(.with { $0.name = "conn" })
      var s = redeployed
      #expect(ServerlessModel.path(s, instance: 1, to: IPv4Address(192, 0, 2, 10), connector: c) == .connector(instance: "conn-2"))
      s.vpcEgress = .privateRangesOnly
      #expect(ServerlessModel.path(s, instance: 0, to: IPv4Address(192, 0, 2, 10), connector: c) == .platform(egressIP: s.serverlessEgressIp))
      #expect(ServerlessModel.path(s, instance: 0, to: IPv4Address(10, 1, 2, 3), connector: c) == .connector(instance: "conn-1"))

      let direct = try await admin.deployService(.with {
        $0.service = .with { $0.name = "api"; $0.region = "r1"; $0.instances = 2; $0.network = "vpc"; $0.subnet = "subnet-1"; $0.vpcEgress = .allTraffic; $0.hosts = ["host-b"] }
      })
      #expect(direct.vpcInstances == ["api-1", "api-2"])
      #expect(try config(core, "host-b").vms.contains { $0.instance == "api-1" && $0.nics.first?.natBindings.isEmpty == false })

      await expectRefused(.failedPrecondition, "name") { _ = try await admin.deleteInstance(.with { $0.name = "conn-1" }) }
      await expectRefused(.failedPrecondition, "name") { _ = try await admin.updateInstanceTags(.with { $0.name = "conn-1"; $0.remove = ["vpc-connector"] }) }
      await expectRefused(.failedPrecondition, "name") { _ = try await admin.deleteServerlessConnector(.with { $0.name = "conn"; $0.region = "r1" }) }
      await expectRefused(.invalidArgument, "connector.ipCidrRange") {
        _ = try await admin.createServerlessConnector(.with { $0.connector = .with { $0.name = "c2"; $0.region = "r1"; $0.network = "vpc"; $0.ipCidrRange = "10.9.0.0/24" } })
      }
      await expectRefused(.invalidArgument, "connector.maxInstances") {
        _ = try await admin.createServerlessConnector(.with { $0.connector = .with { $0.name = "c2"; $0.region = "r1"; $0.network = "vpc"; $0.ipCidrRange = "10.9.0.0/28"; $0.minInstances = 3; $0.maxInstances = 3 } })
      }
      await expectRefused(.invalidArgument, "service.vpcConnector") {
        _ = try await admin.deployService(.with { $0.service = .with { $0.name = "x"; $0.region = "r1"; $0.vpcConnector = "conn"; $0.network = "vpc"; $0.subnet = "subnet-1" } })
      }
      await expectRefused(.notFound, "service.vpcConnector") {
        _ = try await admin.deployService(.with { $0.service = .with { $0.name = "x"; $0.region = "r1"; $0.vpcConnector = "ghost" } })
      }
      _ = try await admin.deleteService(.with { $0.name = "svc"; $0.region = "r1" })
      _ = try await admin.deleteService(.with { $0.name = "api"; $0.region = "r1" })
      _ = try await admin.deleteServerlessConnector(.with { $0.name = "conn"; $0.region = "r1" })
      #expect(try await admin.listInstances(.init()).instances.map(\.name).sorted() == ["vm-1", "vm-2"], "managed instances go with their owners")
    }
  }
}
