import HostnatAddressing
public import GRPCCore
import HostnatDesiredState
import HostnatPlanner
public import HostnatProto
import SwiftProtobuf

/// The admin API (proto: AdminService) on top of ControllerCore. Each mutating call checks
/// names and references here (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION), then the planner
/// checks everything else (INVALID_ARGUMENT with the field); only then is one transaction
/// committed. A refused call changes nothing.
public struct AdminService: Hostnat_V1_AdminService.SimpleServiceProtocol {
  public let core: ControllerCore
  /// Where addresses created without an IP come from (documentation range by default).
  let reservablePool: [String]
  /// Told the method and result ("OK" or the status code) of every request, for metrics.
  let observe: (@Sendable (_ method: String, _ result: String) -> Void)?

  public init(
    core: ControllerCore, reservablePool: [String] = (1...254).map { "203.0.113.\($0)" },
    observe: (@Sendable (_ method: String, _ result: String) -> Void)? = nil
  ) {
    self.core = core
    self.reservablePool = reservablePool
    self.observe = observe
  }

  // MARK: Networks

  public func createNetwork(request: Hostnat_V1_CreateNetworkRequest, context: ServerContext) async throws -> Hostnat_V1_Network {
    var network = request.network
    try await rpc {
      try IntentChecks.name(network.name, field: "network.name")
      network.createTimeMs = core.nowMsValue
      try await core.change { intent in
        if intent.networks.contains(where: { $0.name == network.name }) {
          throw AdminError(.alreadyExists, field: "network.name", reason: "network \(network.name) already exists")
        }
        intent.networks.append(network)
      }
    }
    return network
  }

  public func getNetwork(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Network {
    try await rpc { try IntentChecks.find(core.intent.networks, "network", request.name) { $0.name == request.name } }
  }

  public func listNetworks(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListNetworksResponse {
    .with { $0.networks = core.intent.networks.sorted { $0.name < $1.name } }
  }

  public func deleteNetwork(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        _ = try IntentChecks.find(intent.networks, "network", request.name) { $0.name == request.name }
        let users = intent.subnets.filter { $0.network == request.name }.map { "subnet \($0.name)" }
          + intent.routers.filter { $0.network == request.name }.map { "router \($0.name)" }
        if !users.isEmpty {
          throw AdminError(.failedPrecondition, field: "name", reason: "network \(request.name) is used by \(users.joined(separator: ", "))")
        }
        intent.networks.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Subnets

  public func createSubnet(request: Hostnat_V1_CreateSubnetRequest, context: ServerContext) async throws -> Hostnat_V1_Subnet {
    var subnet = request.subnet
    try await rpc {
      try IntentChecks.name(subnet.name, field: "subnet.name")
      try IntentChecks.nonEmpty(subnet.region, field: "subnet.region")
      try IntentChecks.nonEmpty(subnet.ipCidrRange, field: "subnet.ipCidrRange")
      subnet.createTimeMs = core.nowMsValue
      try await core.change { intent in
        _ = try IntentChecks.find(intent.networks, "network", subnet.network, field: "subnet.network") { $0.name == subnet.network }
        if intent.subnets.contains(where: { $0.name == subnet.name }) {
          throw AdminError(.alreadyExists, field: "subnet.name", reason: "subnet \(subnet.name) already exists")
        }
        intent.subnets.append(subnet)
      }
    }
    return subnet
  }

  public func getSubnet(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Subnet {
    try await rpc {
      let intent = core.intent
      return PrivateGoogleAccess.effective(try find(intent.subnets, "subnet", request), intent)
    }
  }

  public func listSubnets(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListSubnetsResponse {
    .with {
      let intent = core.intent
      $0.subnets = listed(intent.subnets.filter { request.network.isEmpty || $0.network == request.network }, request)
        .map { PrivateGoogleAccess.effective($0, intent) }
    }
  }

  public func updateSubnet(request: Hostnat_V1_UpdateSubnetRequest, context: ServerContext) async throws -> Hostnat_V1_Subnet {
    try await rpc {
      var updated = Hostnat_V1_Subnet()
      try await core.change { intent in
        guard let index = intent.subnets.firstIndex(where: { $0.name == request.subnet.name }) else {
          throw AdminError(.notFound, field: "subnet.name", reason: "subnet \(request.subnet.name) not found")
        }
        let mask = request.updateMask.isEmpty ? ["secondary_ranges", "private_ip_google_access"] : request.updateMask
        for path in mask {
          switch path {
          case "secondary_ranges": intent.subnets[index].secondaryRanges = request.subnet.secondaryRanges
          case "private_ip_google_access":
            // Cloud NAT: while a gateway translates the primary range, PGA stays on.
            if !request.subnet.privateIpGoogleAccess, PrivateGoogleAccess.natPrimarySubnets(intent).contains(request.subnet.name) {
              throw AdminError(
                .failedPrecondition, field: "subnet.privateIpGoogleAccess",
                reason: "a NAT gateway translates the primary range of \(request.subnet.name), so Private Google Access is on and cannot be turned off")
            }
            intent.subnets[index].privateIpGoogleAccess = request.subnet.privateIpGoogleAccess
          default: throw AdminError(.invalidArgument, field: "updateMask", reason: "\(path) cannot be updated on a subnet")
          }
        }
        updated = intent.subnets[index]
      }
      return updated
    }
  }

  public func deleteSubnet(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        _ = try IntentChecks.find(intent.subnets, "subnet", request.name) { $0.name == request.name }
        let users = intent.instances.filter { $0.networkInterfaces.contains { $0.subnet == request.name } }.map(\.name)
        if !users.isEmpty {
          throw AdminError(.failedPrecondition, field: "name", reason: "subnet \(request.name) is used by instances \(users.joined(separator: ", "))")
        }
        intent.subnets.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Routers

  public func createRouter(request: Hostnat_V1_CreateRouterRequest, context: ServerContext) async throws -> Hostnat_V1_Router {
    var router = request.router
    try await rpc {
      try IntentChecks.name(router.name, field: "router.name")
      try IntentChecks.nonEmpty(router.region, field: "router.region")
      if !router.nats.isEmpty {
        throw AdminError(.invalidArgument, field: "router.nats", reason: "create NAT gateways with CreateNat")
      }
      router.createTimeMs = core.nowMsValue
      try await core.change { intent in
        _ = try IntentChecks.find(intent.networks, "network", router.network, field: "router.network") { $0.name == router.network }
        if intent.routers.contains(where: { $0.name == router.name && $0.region == router.region }) {
          throw AdminError(.alreadyExists, field: "router.name", reason: "router \(router.name) already exists in \(router.region)")
        }
        intent.routers.append(router)
      }
    }
    return router
  }

  public func getRouter(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Router {
    try await rpc { try router(request.region, request.name, in: core.intent).router }
  }

  public func listRouters(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListRoutersResponse {
    .with {
      $0.routers = listed(core.intent.routers.filter { request.network.isEmpty || $0.network == request.network }, request)
    }
  }

  public func deleteRouter(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        let index = try router(request.region, request.name, in: intent).index
        intent.routers.remove(at: index)
      }
    }
  }

  // MARK: NAT gateways

  public func createNat(request: Hostnat_V1_CreateNatRequest, context: ServerContext) async throws -> Hostnat_V1_NatGateway {
    try await rpc {
      var nat = request.nat
      try IntentChecks.name(nat.name, field: "nat.name")
      nat.region = request.region
      nat.router = request.router
      try await core.change { intent in
        let index = try router(request.region, request.router, in: intent).index
        if intent.routers[index].nats.contains(where: { $0.name == nat.name }) {
          throw AdminError(.alreadyExists, field: "nat.name", reason: "NAT gateway \(nat.name) already exists on router \(request.router)")
        }
        try IntentChecks.natAddresses(nat, region: request.region, intent: intent)
        intent.routers[index].nats.append(nat)
      }
      return nat
    }
  }

  public func getNat(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_NatGateway {
    try await rpc {
      let router = try router(request.region, request.router, in: core.intent).router
      return try IntentChecks.find(router.nats, "NAT gateway", request.name) { $0.name == request.name }
    }
  }

  public func listNats(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListNatsResponse {
    try await rpc {
      let router = try router(request.region, request.router, in: core.intent).router
      return .with { $0.nats = router.nats.sorted { $0.name < $1.name } }
    }
  }

  public func updateNat(request: Hostnat_V1_UpdateNatRequest, context: ServerContext) async throws -> Hostnat_V1_NatGateway {
    try await rpc {
      var updated = Hostnat_V1_NatGateway()
      try await core.change { intent in
        let routerIndex = try router(request.region, request.router, in: intent).index
        guard let index = intent.routers[routerIndex].nats.firstIndex(where: { $0.name == request.nat.name }) else {
          throw AdminError(.notFound, field: "nat.name", reason: "NAT gateway \(request.nat.name) not found on router \(request.router)")
        }
        var nat = intent.routers[routerIndex].nats[index]
        try IntentChecks.merge(request.nat, into: &nat, mask: request.updateMask)
        try IntentChecks.natAddresses(nat, region: request.region, intent: intent)
        intent.routers[routerIndex].nats[index] = nat
        updated = nat
      }
      return updated
    }
  }

  public func deleteNat(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        let routerIndex = try router(request.region, request.router, in: intent).index
        guard intent.routers[routerIndex].nats.contains(where: { $0.name == request.name }) else {
          throw AdminError(.notFound, field: "name", reason: "NAT gateway \(request.name) not found on router \(request.router)")
        }
        intent.routers[routerIndex].nats.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Addresses

  public func createAddress(request: Hostnat_V1_CreateAddressRequest, context: ServerContext) async throws -> Hostnat_V1_Address {
    try await rpc {
      var address = request.address
      try IntentChecks.name(address.name, field: "address.name")
      try IntentChecks.nonEmpty(address.region, field: "address.region")
      address.createTimeMs = core.nowMsValue
      address.status = .reserved
      try await core.change { intent in
        if intent.addresses.contains(where: { $0.name == address.name && $0.region == address.region }) {
          throw AdminError(.alreadyExists, field: "address.name", reason: "address \(address.name) already exists in \(address.region)")
        }
        let taken = Set(intent.addresses.map(\.address))
        if address.address.isEmpty {
          guard let free = reservablePool.first(where: { !taken.contains($0) }) else {
            throw AdminError(.failedPrecondition, field: "address.address", reason: "no free address left in the reservable pool")
          }
          address.address = free
        } else {
          try IntentChecks.ipv4(address.address, field: "address.address")
          if taken.contains(address.address) {
            throw AdminError(.alreadyExists, field: "address.address", reason: "\(address.address) is already reserved")
          }
          // AUTO_ONLY gateways take these without a reservation: reserving one too would let
          // two gateways translate to the same IP.
          if let region = core.autoPools.keys.sorted().first(where: { core.autoPools[$0]?.contains(address.address) == true }) {
            throw AdminError(
              .failedPrecondition, field: "address.address",
              reason: "\(address.address) belongs to the auto-allocation pool of \(region)")
          }
        }
        intent.addresses.append(address)
      }
      return address
    }
  }

  public func getAddress(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Address {
    try await rpc {
      let intent = core.intent
      let address = try find(intent.addresses, "address", request)
      return IntentChecks.withUsage(address, intent: intent)
    }
  }

  public func listAddresses(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListAddressesResponse {
    let intent = core.intent
    return .with {
      $0.addresses = listed(intent.addresses, request)
        .map { IntentChecks.withUsage($0, intent: intent) }
    }
  }

  public func deleteAddress(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        let address = try find(intent.addresses, "address", request)
        let user = IntentChecks.withUsage(address, intent: intent).user
        if !user.isEmpty {
          throw AdminError(.failedPrecondition, field: "name", reason: "address \(request.name) is used by \(user)")
        }
        intent.addresses.removeAll { $0.name == request.name && $0.region == address.region }
      }
    }
  }

  // MARK: Instances

  public func createInstance(request: Hostnat_V1_CreateInstanceRequest, context: ServerContext) async throws -> Hostnat_V1_Instance {
    try await rpc {
      var instance = request.instance
      try IntentChecks.name(instance.name, field: "instance.name")
      try IntentChecks.nonEmpty(instance.host, field: "instance.host")
      if instance.networkInterfaces.isEmpty {
        throw AdminError(.invalidArgument, field: "instance.networkInterfaces", reason: "an instance needs at least one network interface")
      }
      instance.tags = try IntentChecks.tags(instance.tags, field: "instance.tags")
      instance.createTimeMs = core.nowMsValue
      try await core.change { intent in
        if intent.instances.contains(where: { $0.name == instance.name }) {
          throw AdminError(.alreadyExists, field: "instance.name", reason: "instance \(instance.name) already exists")
        }
        for index in instance.networkInterfaces.indices {
          let field = "instance.networkInterfaces[\(index)]"
          let nic = instance.networkInterfaces[index]
          let subnet = try IntentChecks.find(intent.subnets, "subnet", nic.subnet, field: "\(field).subnet") { $0.name == nic.subnet }
          instance.region = subnet.region
          instance.networkInterfaces[index].name = "nic\(index)"
          if nic.networkIp.isEmpty {
            instance.networkInterfaces[index].networkIp = try IntentChecks.nextFreeIP(in: subnet, intent: intent, field: "\(field).networkIp")
          }
        }
        intent.instances.append(instance)
      }
      return instance
    }
  }

  public func updateInstanceTags(request: Hostnat_V1_UpdateInstanceTagsRequest, context: ServerContext) async throws -> Hostnat_V1_Instance {
    try await rpc {
      _ = try IntentChecks.tags(request.add, field: "add")
      for (i, tag) in request.remove.enumerated() { try IntentChecks.name(tag, field: "remove[\(i)]") }
      var updated = Hostnat_V1_Instance()
      try await core.change { intent in
        guard let index = intent.instances.firstIndex(where: { $0.name == request.name }) else {
          throw AdminError(.notFound, field: "name", reason: "instance \(request.name) not found")
        }
        if let owner = Self.manager(of: request.name, in: intent) {
          throw AdminError(.failedPrecondition, field: "name", reason: "instance \(request.name) is managed by \(owner); its tags are set there")
        }
        let remove = Set(request.remove)
        intent.instances[index].tags = try IntentChecks.tags(
          intent.instances[index].tags.filter { !remove.contains($0) } + request.add, field: "add")
        updated = intent.instances[index]
      }
      return updated
    }
  }

  /// The serverless resource whose instance `name` is ("connector C" or "service S"), if any.
  static func manager(of name: String, in intent: StoredIntent) -> String? {
    intent.connectors.first(where: { $0.instances.contains(name) }).map { "connector \($0.name)" }
      ?? intent.services.first(where: { $0.vpcInstances.contains(name) }).map { "service \($0.name)" }
  }

  public func getInstance(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_Instance {
    try await rpc { try IntentChecks.find(core.intent.instances, "instance", request.name) { $0.name == request.name } }
  }

  public func listInstances(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListInstancesResponse {
    .with {
      $0.instances = core.intent.instances
        .filter { (request.region.isEmpty || $0.region == request.region) && (request.host.isEmpty || $0.host == request.host) }
        .sorted { $0.name < $1.name }
    }
  }

  public func deleteInstance(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_DeleteResponse {
    try await rpc {
      try await deleting(request.name) { intent in
        _ = try IntentChecks.find(intent.instances, "instance", request.name) { $0.name == request.name }
        if let owner = Self.manager(of: request.name, in: intent) {
          throw AdminError(.failedPrecondition, field: "name", reason: "instance \(request.name) is managed by \(owner); change that instead")
        }
        intent.instances.removeAll { $0.name == request.name }
      }
    }
  }

  // MARK: Status

  public func getRouterStatus(request: Hostnat_V1_ResourceName, context: ServerContext) async throws -> Hostnat_V1_RouterStatusResponse {
    try await rpc {
      let router = try router(request.region, request.name, in: core.intent).router
      let planner = core.planner
      return .with {
        $0.kind = "compute#routerStatusResponse"
        $0.result.network = router.network
        $0.result.natStatus = router.nats.compactMap { nat in
          planner.status(gateway: IntentMapping.gatewayKey(region: router.region, router: router.name, nat: nat.name)).map { status in
            .with {
              $0.name = nat.name
              $0.autoAllocatedNatIps = status.autoAllocatedNatIps
              $0.userAllocatedNatIps = status.userAllocatedNatIps
              $0.drainUserAllocatedNatIps = status.drainUserAllocatedNatIps
              $0.minExtraNatIpsNeeded = Int32(status.minExtraNatIpsNeeded)
              $0.numVmEndpointsWithNatMappings = Int32(status.numVmEndpointsWithNatMappings)
              $0.vmsWithoutNat = status.vmNicsWithoutNat.map(\.instance)
              $0.ruleStatus = status.ruleStatus.map { rule in
                .with {
                  $0.ruleNumber = UInt32(rule.ruleNumber)
                  $0.activeNatIps = rule.activeNatIps
                  $0.drainNatIps = rule.drainNatIps
                  $0.minExtraIpsNeeded = Int32(rule.minExtraIpsNeeded)
                  $0.numVmEndpointsWithNatMappings = Int32(rule.numVmEndpointsWithNatMappings)
                }
              }
            }
          }
        }
      }
    }
  }

  public func getNatMappingInfo(request: Hostnat_V1_GetNatMappingInfoRequest, context: ServerContext) async throws -> Hostnat_V1_NatMappingInfoResponse {
    try await rpc {
      let intent = core.intent
      let router = try router(request.region, request.router, in: intent).router
      let prefix = "\(router.region)/\(router.name)/"
      let planner = core.planner
      return .with {
        $0.result = intent.instances.sorted { $0.name < $1.name }.compactMap { instance in
          guard let info = planner.natMappingInfo(instance: instance.name) else { return nil }
          let mappings = info.interfaceNatMappings.filter {
            $0.gateway.hasPrefix(prefix) && (request.natName.isEmpty || $0.gateway == prefix + request.natName)
          }
          guard !mappings.isEmpty else { return nil }
          return .with {
            $0.instanceName = instance.name
            $0.interfaceNatMappings = mappings.map { mapping in
              .with {
                $0.sourceVirtualIp = mapping.sourceVirtualIp ?? ""
                $0.sourceAliasIpRange = mapping.sourceAliasIpRange ?? ""
                $0.natIpPortRanges = mapping.natIpPortRanges.map(\.description)
                $0.drainNatIpPortRanges = mapping.drainNatIpPortRanges.map(\.description)
                $0.numTotalNatPorts = Int32(mapping.numTotalNatPorts)
                $0.numTotalDrainNatPorts = Int32(mapping.numTotalDrainNatPorts)
                $0.ruleMappings = mapping.ruleMappings.map { rule in
                  .with {
                    $0.ruleNumber = UInt32(rule.ruleNumber)
                    $0.natIpPortRanges = rule.natIpPortRanges.map(\.description)
                    $0.drainNatIpPortRanges = rule.drainNatIpPortRanges.map(\.description)
                    $0.numTotalNatPorts = Int32(rule.natIpPortRanges.reduce(0) { $0 + $1.portCount })
                    $0.numTotalDrainNatPorts = Int32(rule.drainNatIpPortRanges.reduce(0) { $0 + $1.portCount })
                  }
                }
              }
            }
          }
        }
      }
    }
  }

  public func whoHad(request: Hostnat_V1_WhoHadRequest, context: ServerContext) async throws -> Hostnat_V1_WhoHadResponse {
    try await rpc {
      try IntentChecks.ipv4(request.natIp, field: "natIp")
      guard (1024...65535).contains(request.port) else {
        throw AdminError(.invalidArgument, field: "port", reason: "NAT ports are 1024-65535, got \(request.port)")
      }
      let at = request.atMs == 0 ? core.nowMsValue : request.atMs
      let records = try await core.store.fetch { try $0.allocations(holding: request.natIp, port: Int(request.port), atMs: at) }
      guard let record = records.last else { return .with { $0.found = false } }
      return .with {
        $0.found = true
        $0.instance = record.instance
        $0.interface = record.nic
        $0.host = record.host
        $0.gateway = record.gateway
        $0.natIpPortRange = "\(record.natIP):\(record.firstPort)-\(record.firstPort + record.count - 1)"
        $0.fromMs = record.grantedMs
        $0.untilMs = record.releasedMs ?? 0
        $0.drained = record.drained
      }
    }
  }

  // MARK: Helpers

  /// Runs a call and tells `observe` its result. An `AdminError` becomes the gRPC status the
  /// proto documents by itself (`RPCErrorConvertible`).
  func rpc<T>(method: String = #function, _ body: () async throws -> T) async throws -> T {
    let name = String(method.prefix { $0 != "(" })
    do {
      let result = try await body()
      observe?(name, "OK")
      return result
    } catch let error as AdminError {
      observe?(name, "\(error.rpcErrorCode)")
      throw error
    } catch {
      observe?(name, "INTERNAL")
      throw error
    }
  }

  func deleting(_ name: String, _ edit: (inout StoredIntent) throws -> Void) async throws -> Hostnat_V1_DeleteResponse {
    let outcome = try await core.change(edit)
    return .with {
      $0.name = name
      $0.hostVersions = outcome.hostVersions
    }
  }

  func router(_ region: String, _ name: String, in intent: StoredIntent) throws -> (router: Hostnat_V1_Router, index: Int) {
    guard let index = intent.routers.firstIndex(where: { $0.name == name && (region.isEmpty || $0.region == region) }) else {
      throw AdminError(.notFound, field: "router", reason: "router \(name) not found\(region.isEmpty ? "" : " in \(region)")")
    }
    return (intent.routers[index], index)
  }
}

/// A resource named per region: a request without a region matches any.
protocol RegionalResource {
  var name: String { get }
  var region: String { get }
}

extension Hostnat_V1_Subnet: RegionalResource {}
extension Hostnat_V1_Router: RegionalResource {}
extension Hostnat_V1_Address: RegionalResource {}
extension Hostnat_V1_ServerlessConnector: RegionalResource {}
extension Hostnat_V1_ServerlessService: RegionalResource {}

extension AdminService {
  /// The resource the request names, or NOT_FOUND.
  func find<R: RegionalResource>(_ items: [R], _ kind: String, _ request: Hostnat_V1_ResourceName) throws -> R {
    try IntentChecks.find(items, kind, request.name) { $0.name == request.name && IntentChecks.region($0.region, request) }
  }

  /// The resources of the request's region (all without one), by region then name.
  func listed<R: RegionalResource>(_ items: [R], _ request: Hostnat_V1_ListRequest) -> [R] {
    items.filter { request.region.isEmpty || $0.region == request.region }.sorted { ($0.region, $0.name) < ($1.region, $1.name) }
  }
}
