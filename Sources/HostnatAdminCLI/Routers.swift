import ArgumentParser
import HostnatProto
import SwiftProtobuf

/// `hostnat routers ...`
struct RoutersCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "routers", abstract: "Cloud Routers, their NAT gateways and their status.",
    subcommands: [Create.self, Describe.self, List.self, Delete.self, NatsCommand.self, GetStatus.self, GetNATMappingInfo.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a router.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Router name.") var name: String
    @Option(help: "Network served by the router.") var network: String
    @Option(help: "Region of the router.") var region: String
    @Option(help: "Free text.") var description: String?
    @Option(help: "Project (must be the network's: the Shared VPC host project).") var project: String?

    func run() async throws {
      try await AdminSession(command: "routers.create", global: global).run { admin in
        let router = try await admin.createRouter(
          .with {
            $0.router = .with {
              $0.name = name
              $0.network = network
              $0.region = region
              $0.description_p = description ?? ""
              $0.project = project ?? ""
            }
          }, options: AdminSession.callOptions)
        Console.err("Created [regions/\(router.region)/routers/\(router.name)].\n")
        Render.routers([router], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a router and its NAT gateways.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.describe", global: global).run { admin in
        let router = try await admin.getRouter(.with { $0.name = name; $0.region = region }, options: AdminSession.callOptions)
        Render.routers([router], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List routers.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this region's routers.") var region: String?
    @Option(help: "Only this network's routers.") var network: String?

    func run() async throws {
      try await AdminSession(command: "routers.list", global: global).run { admin in
        let response = try await admin.listRouters(
          .with { $0.region = region ?? ""; $0.network = network ?? "" }, options: AdminSession.callOptions)
        Render.routers(response.routers, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a router and its NAT gateways.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.delete", global: global).run { admin in
        let response = try await admin.deleteRouter(.with { $0.name = name; $0.region = region }, options: AdminSession.callOptions)
        Render.deleted("regions/\(region)/routers/\(name)", response, format: global.format)
      }
    }
  }

  struct GetStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "get-status", abstract: "Per NAT gateway: its NAT IPs, drained IPs, and how many more IPs it needs.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Router name.") var name: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.get-status", global: global).run { admin in
        let status = try await admin.getRouterStatus(.with { $0.name = name; $0.region = region }, options: AdminSession.callOptions)
        Render.routerStatus(status, format: global.format ?? .yaml)
      }
    }
  }

  struct GetNATMappingInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "get-nat-mapping-info", abstract: "Per VM NIC: its NAT IP:port ranges (active and drained).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Router name.") var name: String
    @Option(help: "Region of the router.") var region: String
    @Option(help: "Only this NAT gateway.") var natName: String?

    func run() async throws {
      try await AdminSession(command: "routers.get-nat-mapping-info", global: global).run { admin in
        let info = try await admin.getNatMappingInfo(
          .with {
            $0.router = name
            $0.region = region
            $0.natName = natName ?? ""
          }, options: AdminSession.callOptions)
        Render.mappingInfo(info, format: global.format ?? .yaml)
      }
    }
  }
}

/// `hostnat routers nats ...`
struct NatsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "nats", abstract: "NAT gateways (Cloud NAT) on a router.",
    subcommands: [Create.self, Update.self, Describe.self, List.self, Delete.self, WhoHad.self, NATRulesCommand.self])

  /// The flags of `nats create` and `nats update`, as gcloud spells them.
  struct GatewayFlags: ParsableArguments {
    @Flag(help: "Take NAT IPs from the region's pool as needed (AUTO_ONLY).")
    var autoAllocateNatExternalIps = false
    @Option(help: "Reserved addresses (names or IPs) to use, A,B,... (MANUAL_ONLY).")
    var natExternalIpPool: [String] = []
    @Option(help: "Reserved addresses to drain: existing flows continue, no new ones.")
    var natExternalDrainIpPool: [String] = []
    @Flag(help: "Stop draining: remove every drained IP (update only).")
    var clearNatExternalDrainIpPool = false
    @Flag(help: "Translate every range of every subnet of the network in the region.")
    var natAllSubnetIpRanges = false
    @Flag(help: "Translate the primary range of every subnet.")
    var natPrimarySubnetIpRanges = false
    @Option(help: "Translate these subnets: SUBNET (primary), SUBNET:RANGE_NAME (a secondary range) or SUBNET:ALL, comma-separated.")
    var natCustomSubnetIpRanges: [String] = []
    @Option(help: "Minimum ports per VM (a power of two).")
    var minPortsPerVm: UInt32?
    @Option(help: "Maximum ports per VM with dynamic port allocation (a power of two).")
    var maxPortsPerVm: UInt32?
    @Flag(inversion: .prefixedNo, help: "Dynamic port allocation.")
    var enableDynamicPortAllocation: Bool?
    @Flag(inversion: .prefixedNo, help: "Endpoint-independent mapping.")
    var enableEndpointIndependentMapping: Bool?
    @Option(help: "UDP idle timeout (e.g. 30s, 2m).") var udpIdleTimeout: String?
    @Option(help: "ICMP idle timeout.") var icmpIdleTimeout: String?
    @Option(help: "TCP established idle timeout.") var tcpEstablishedIdleTimeout: String?
    @Option(help: "TCP transitory idle timeout.") var tcpTransitoryIdleTimeout: String?
    @Option(help: "TCP TIME_WAIT timeout.") var tcpTimeWaitTimeout: String?
    @Flag(inversion: .prefixedNo, help: "NAT logging.")
    var enableLogging: Bool?
    @Option(help: "What logging records: ALL, ERRORS_ONLY or TRANSLATIONS_ONLY.") var logFilter: String?

    /// Applies the given flags to `nat` and returns the update mask (proto field names) of what
    /// they set. `creating` requires the pool and range choices gcloud requires.
    func apply(to nat: inout Hostnat_V1_NatGateway, creating: Bool) throws(CommandError) -> [String] {
      var mask: [String] = []
      let pool = Parse.commaList(natExternalIpPool)
      if autoAllocateNatExternalIps && !pool.isEmpty {
        throw CommandError(flag: "--auto-allocate-nat-external-ips", reason: "cannot be combined with --nat-external-ip-pool")
      }
      if creating && !autoAllocateNatExternalIps && pool.isEmpty {
        throw CommandError(flag: "--auto-allocate-nat-external-ips", reason: "exactly one of --auto-allocate-nat-external-ips or --nat-external-ip-pool is required")
      }
      if autoAllocateNatExternalIps {
        nat.natIpAllocateOption = .autoOnly
        nat.natIps = []
        mask += ["nat_ip_allocate_option", "nat_ips"]
      } else if !pool.isEmpty {
        nat.natIpAllocateOption = .manualOnly
        nat.natIps = pool
        mask += ["nat_ip_allocate_option", "nat_ips"]
      }
      let drain = Parse.commaList(natExternalDrainIpPool)
      if !drain.isEmpty && clearNatExternalDrainIpPool {
        throw CommandError(flag: "--clear-nat-external-drain-ip-pool", reason: "cannot be combined with --nat-external-drain-ip-pool")
      }
      if creating && clearNatExternalDrainIpPool {
        throw CommandError(flag: "--clear-nat-external-drain-ip-pool", reason: "only applies to update")
      }
      if !drain.isEmpty || clearNatExternalDrainIpPool {
        nat.drainNatIps = drain
        mask.append("drain_nat_ips")
      }

      let custom = Parse.commaList(natCustomSubnetIpRanges)
      let rangeChoices = [natAllSubnetIpRanges, natPrimarySubnetIpRanges, !custom.isEmpty].filter { $0 }.count
      if rangeChoices > 1 {
        throw CommandError(
          flag: "--nat-all-subnet-ip-ranges",
          reason: "--nat-all-subnet-ip-ranges, --nat-primary-subnet-ip-ranges and --nat-custom-subnet-ip-ranges are mutually exclusive")
      }
      if creating && rangeChoices == 0 {
        throw CommandError(
          flag: "--nat-all-subnet-ip-ranges",
          reason: "exactly one of --nat-all-subnet-ip-ranges, --nat-primary-subnet-ip-ranges or --nat-custom-subnet-ip-ranges is required")
      }
      if natAllSubnetIpRanges {
        nat.sourceSubnetworkIpRangesToNat = .allSubnetworksAllIpRanges
        nat.subnetworks = []
      } else if natPrimarySubnetIpRanges {
        nat.sourceSubnetworkIpRangesToNat = .allSubnetworksAllPrimaryIpRanges
        nat.subnetworks = []
      } else if !custom.isEmpty {
        nat.sourceSubnetworkIpRangesToNat = .listOfSubnetworks
        nat.subnetworks = try Self.subnetworks(custom)
      }
      if rangeChoices == 1 { mask += ["source_subnetwork_ip_ranges_to_nat", "subnetworks"] }

      if let minPortsPerVm {
        nat.minPortsPerVm = minPortsPerVm
        mask.append("min_ports_per_vm")
      }
      if let maxPortsPerVm {
        nat.maxPortsPerVm = maxPortsPerVm
        mask.append("max_ports_per_vm")
      }
      if let enableDynamicPortAllocation {
        nat.enableDynamicPortAllocation = enableDynamicPortAllocation
        mask.append("enable_dynamic_port_allocation")
      }
      if let enableEndpointIndependentMapping {
        nat.enableEndpointIndependentMapping = enableEndpointIndependentMapping
        mask.append("enable_endpoint_independent_mapping")
      }

      var timeouts = nat.timeouts
      let timeoutFlags: [(String, String?, WritableKeyPath<Hostnat_V1_NatTimeouts, UInt32>)] = [
        ("--udp-idle-timeout", udpIdleTimeout, \.udpIdleTimeoutSec),
        ("--icmp-idle-timeout", icmpIdleTimeout, \.icmpIdleTimeoutSec),
        ("--tcp-established-idle-timeout", tcpEstablishedIdleTimeout, \.tcpEstablishedIdleTimeoutSec),
        ("--tcp-transitory-idle-timeout", tcpTransitoryIdleTimeout, \.tcpTransitoryIdleTimeoutSec),
        ("--tcp-time-wait-timeout", tcpTimeWaitTimeout, \.tcpTimeWaitTimeoutSec),
      ]
      var timeoutsChanged = false
      for (flag, value, keyPath) in timeoutFlags {
        guard let value else { continue }
        timeouts[keyPath: keyPath] = try Parse.seconds(value, flag: flag)
        timeoutsChanged = true
      }
      if timeoutsChanged {
        nat.timeouts = timeouts
        mask.append("timeouts")
      }

      var log = nat.logConfig
      var logChanged = false
      if let enableLogging {
        log.enable = enableLogging
        logChanged = true
      }
      if let logFilter {
        switch logFilter.uppercased() {
        case "ALL": log.filter = .all
        case "ERRORS_ONLY": log.filter = .errorsOnly
        case "TRANSLATIONS_ONLY": log.filter = .translationsOnly
        default: throw CommandError(flag: "--log-filter", reason: "\"\(logFilter)\" is not ALL, ERRORS_ONLY or TRANSLATIONS_ONLY")
        }
        logChanged = true
      }
      if logChanged {
        nat.logConfig = log
        mask.append("log_config")
      }
      return mask
    }

    /// gcloud's SUBNET[:RANGE_NAME|:ALL] entries, grouped per subnet.
    static func subnetworks(_ items: [String]) throws(CommandError) -> [Hostnat_V1_NatSubnetwork] {
      var order: [String] = []
      var bySubnet: [String: Hostnat_V1_NatSubnetwork] = [:]
      for item in items {
        let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count), !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
          throw CommandError(flag: "--nat-custom-subnet-ip-ranges", reason: "\"\(item)\" is not SUBNET, SUBNET:RANGE_NAME or SUBNET:ALL")
        }
        var entry = bySubnet[parts[0]] ?? .with { $0.name = parts[0] }
        if bySubnet[parts[0]] == nil { order.append(parts[0]) }
        let selection: Hostnat_V1_SubnetRangeSelection
        if parts.count == 1 {
          selection = .primaryIpRange
        } else if parts[1] == "ALL" {
          selection = .allIpRanges
        } else {
          selection = .listOfSecondaryIpRanges
          entry.secondaryIpRangeNames.append(parts[1])
        }
        if !entry.sourceIpRangesToNat.contains(selection) { entry.sourceIpRangesToNat.append(selection) }
        bySubnet[parts[0]] = entry
      }
      return order.compactMap { bySubnet[$0] }
    }
  }

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a NAT gateway on a router.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Gateway name.") var name: String
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String
    @OptionGroup var flags: GatewayFlags

    func run() async throws {
      let session = AdminSession(command: "routers.nats.create", global: global)
      var nat = Hostnat_V1_NatGateway()
      nat.name = name
      _ = try session.check { () throws in try flags.apply(to: &nat, creating: true) }
      try await session.run { admin in
        let created = try await admin.createNat(
          .with {
            $0.region = region
            $0.router = router
            $0.nat = nat
          }, options: AdminSession.callOptions)
        Console.err("Created [regions/\(region)/routers/\(router)/nats/\(created.name)].\n")
        Render.nats([created], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Change a NAT gateway: pools, drain, ranges, ports, timeouts, logging.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Gateway name.") var name: String
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String
    @OptionGroup var flags: GatewayFlags

    func run() async throws {
      let session = AdminSession(command: "routers.nats.update", global: global)
      // Validate the flags on a scratch gateway first, so bad syntax never needs the controller.
      var scratch = Hostnat_V1_NatGateway()
      let mask = try session.check { () throws in try flags.apply(to: &scratch, creating: false) }
      if mask.isEmpty { throw session.fail(CommandError(.badFlag, "nothing to update: give at least one flag")) }
      try await session.run { admin in
        // Timeouts and logging are whole messages in the mask: start from the current gateway
        // so that one flag changes one value.
        var nat = try await admin.getNat(.with { $0.region = region; $0.router = router; $0.name = name }, options: AdminSession.callOptions)
        _ = try flags.apply(to: &nat, creating: false)
        let updated = try await admin.updateNat(
          .with {
            $0.region = region
            $0.router = router
            $0.nat = nat
            $0.updateMask = mask
          }, options: AdminSession.callOptions)
        Console.err("Updated [regions/\(region)/routers/\(router)/nats/\(updated.name)].\n")
        Render.nats([updated], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a NAT gateway.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.nats.describe", global: global).run { admin in
        let nat = try await admin.getNat(.with { $0.region = region; $0.router = router; $0.name = name }, options: AdminSession.callOptions)
        Render.nats([nat], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a router's NAT gateways.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.nats.list", global: global).run { admin in
        let response = try await admin.listNats(.with { $0.region = region; $0.router = router }, options: AdminSession.callOptions)
        Render.nats(response.nats, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a NAT gateway.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String

    func run() async throws {
      try await AdminSession(command: "routers.nats.delete", global: global).run { admin in
        let response = try await admin.deleteNat(.with { $0.region = region; $0.router = router; $0.name = name }, options: AdminSession.callOptions)
        Render.deleted("regions/\(region)/routers/\(router)/nats/\(name)", response, format: global.format)
      }
    }
  }

  struct WhoHad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "who-had", abstract: "Which VM (and host) held NAT_IP:PORT at a time, from the allocation history.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAT_IP:PORT, e.g. 203.0.113.1:1050.") var endpoint: String
    @Option(help: "When: RFC 3339 (2024-05-01T12:00:00Z) or Unix milliseconds. Default: now.") var at: String?

    func run() async throws {
      let session = AdminSession(command: "routers.nats.who-had", global: global)
      let (ip, port, atMs) = try session.check { () throws -> (String, UInt32, Int64) in
        let (ip, port) = try Parse.natEndpoint(endpoint)
        return (ip, port, try at.map { v in try Parse.time(v, flag: "--at") } ?? 0)
      }
      try await session.run { admin in
        let response = try await admin.whoHad(
          .with {
            $0.natIp = ip
            $0.port = port
            $0.atMs = atMs
          }, options: AdminSession.callOptions)
        Render.whoHad(response, endpoint: endpoint, atMs: atMs, format: global.format ?? .table)
      }
    }
  }
}
