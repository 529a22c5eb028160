import ArgumentParser
import HostnatProto
import SwiftProtobuf

/// `hostnat addresses ...`: reserved external IPs, usable as manual NAT IPs.
struct AddressesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "addresses", abstract: "Reserved external IP addresses.",
    subcommands: [Create.self, Describe.self, List.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reserve an address.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Address name.") var name: String
    @Option(help: "Region of the address.") var region: String
    @Option(help: "The IP to reserve; default: the next free one.") var addresses: String?
    @Option(help: "Free text.") var description: String?

    func run() async throws {
      let session = AdminSession(command: "addresses.create", global: global)
      let ip = try session.check { () throws in try addresses.map { v in try Parse.ipv4(v, flag: "--addresses") } }
      try await session.run { admin in
        let address = try await admin.createAddress(
          .with {
            $0.address = .with {
              $0.name = name
              $0.region = region
              $0.address = ip ?? ""
              $0.description_p = description ?? ""
            }
          }, options: AdminSession.callOptions)
        Console.err("Created [regions/\(address.region)/addresses/\(address.name)].\n")
        Render.addresses([address], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an address and who uses it.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the address.") var region: String

    func run() async throws {
      try await AdminSession(command: "addresses.describe", global: global).run { admin in
        let address = try await admin.getAddress(.with { $0.name = name; $0.region = region }, options: AdminSession.callOptions)
        Render.addresses([address], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List addresses.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this region's addresses.") var region: String?

    func run() async throws {
      try await AdminSession(command: "addresses.list", global: global).run { admin in
        let response = try await admin.listAddresses(.with { $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.addresses(response.addresses, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release an address no gateway uses.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Region of the address.") var region: String

    func run() async throws {
      try await AdminSession(command: "addresses.delete", global: global).run { admin in
        let response = try await admin.deleteAddress(.with { $0.name = name; $0.region = region }, options: AdminSession.callOptions)
        Render.deleted("regions/\(region)/addresses/\(name)", response, format: global.format)
      }
    }
  }
}

/// `hostnat instances ...`: VMs on hosts.
struct InstancesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "instances", abstract: "VM instances and the hosts that run them.",
    subcommands: [Create.self, Describe.self, List.self, Delete.self, AddTags.self, RemoveTags.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create an instance with one NIC.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Instance name.") var name: String
    @Option(help: "Host (agent id) that runs the VM.") var host: String
    @Option(help: "Subnet of its NIC.") var subnet: String
    @Option(help: "Primary internal IP; default: the next free one.") var privateIp: String?
    @Option(help: "Alias IP range CIDR, or RANGE_NAME:CIDR for a secondary range (repeatable).") var aliasRange: [String] = []
    @Option(help: "External IP (1:1, bypasses NAT for the primary IP).") var externalIp: String?
    @Option(help: "A further NIC, SUBNET or SUBNET:IP, each in another network (repeatable).") var extraNic: [String] = []
    @Option(help: "Project (a Shared VPC service project may use its host project's networks).") var project: String?
    @Option(help: "Network tags, A,B,... (firewall rules with --target-tags apply to instances carrying one).") var tags: [String] = []

    func run() async throws {
      let session = AdminSession(command: "instances.create", global: global)
      let extras = try session.check { () throws(CommandError) -> [Hostnat_V1_NetworkInterface] in
        try extraNic.map { item throws(CommandError) in
          let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
          var nic = Hostnat_V1_NetworkInterface()
          nic.subnet = parts[0]
          if parts.count == 2 { nic.networkIp = try Parse.ipv4(parts[1], flag: "--extra-nic") }
          return nic
        }
      }
      let nic = try session.check { () throws -> Hostnat_V1_NetworkInterface in
        var nic = Hostnat_V1_NetworkInterface()
        nic.subnet = subnet
        if let privateIp { nic.networkIp = try Parse.ipv4(privateIp, flag: "--private-ip") }
        if let externalIp { nic.externalIp = try Parse.ipv4(externalIp, flag: "--external-ip") }
        for item in Parse.commaList(aliasRange) {
          let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
          let cidrText = parts.count == 2 ? parts[1] : parts[0]
          let cidr = cidrText.contains("/") ? cidrText : cidrText + "/32"
          let checked = try Parse.cidr(cidr, flag: "--alias-range")
          nic.aliasIpRanges.append(.with {
            $0.ipCidrRange = checked
            $0.subnetworkRangeName = parts.count == 2 ? parts[0] : ""
          })
        }
        return nic
      }
      try await session.run { admin in
        let instance = try await admin.createInstance(
          .with {
            $0.instance = .with {
              $0.name = name
              $0.host = host
              $0.networkInterfaces = [nic] + extras
              $0.project = project ?? ""
              $0.tags = Parse.commaList(tags)
            }
          }, options: AdminSession.callOptions)
        Console.err("Created [instances/\(instance.name)].\n")
        Render.instances([instance], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an instance.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String

    func run() async throws {
      try await AdminSession(command: "instances.describe", global: global).run { admin in
        let instance = try await admin.getInstance(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.instances([instance], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List instances.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only instances on this host.") var host: String?
    @Option(help: "Only this region's instances.") var region: String?

    func run() async throws {
      try await AdminSession(command: "instances.list", global: global).run { admin in
        let response = try await admin.listInstances(.with { $0.host = host ?? ""; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.instances(response.instances, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete an instance; its ports are quarantined until its host lets go.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String

    func run() async throws {
      try await AdminSession(command: "instances.delete", global: global).run { admin in
        let response = try await admin.deleteInstance(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.deleted("instances/\(name)", response, format: global.format)
      }
    }
  }
}

extension InstancesCommand {
  /// `instances add-tags NAME --tags A,B`, as gcloud spells it.
  struct AddTags: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "add-tags", abstract: "Add network tags to an instance (new connections meet the rules of its new tags).")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Tags to add, A,B,...") var tags: [String]

    func run() async throws {
      try await updateTags(name, add: Parse.commaList(tags), remove: [], global: global, command: "instances.add-tags")
    }
  }

  /// `instances remove-tags NAME --tags A,B`.
  struct RemoveTags: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "remove-tags", abstract: "Remove network tags from an instance (its established connections go on).")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option(help: "Tags to remove, A,B,...") var tags: [String]

    func run() async throws {
      try await updateTags(name, add: [], remove: Parse.commaList(tags), global: global, command: "instances.remove-tags")
    }
  }

  static func updateTags(_ name: String, add: [String], remove: [String], global: GlobalOptions, command: String) async throws {
    try await AdminSession(command: command, global: global).run { admin in
      let instance = try await admin.updateInstanceTags(
        .with {
          $0.name = name
          $0.add = add
          $0.remove = remove
        }, options: AdminSession.callOptions)
      Console.err("Updated [instances/\(instance.name)].\n")
      Render.instances([instance], format: global.format ?? .table, single: true)
    }
  }
}

/// `hostnat hosts list`: every agent and edge the controller knows, with config versions.
struct HostsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hosts", abstract: "Hosts (agents and edges) and their config versions.", subcommands: [List.self, Forget.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List hosts: connected, versions sent and acknowledged, last NACK.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
      try await AdminSession(command: "hosts.list", global: global).run { admin in
        let response = try await admin.listHosts(.init(), options: AdminSession.callOptions)
        Render.hosts(response, format: global.format ?? .table)
      }
    }
  }

  /// `hosts forget HOST`: like deleting a dead node; warns, because a host that is only cut off
  /// may still be translating on the blocks this frees.
  struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Declare a host gone for good: free the port blocks waiting for it to acknowledge (only for a host that is really dead).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The host id.") var host: String

    func run() async throws {
      try await AdminSession(command: "hosts.forget", global: global).run { admin in
        let response = try await admin.forgetHost(.with { $0.hostID = host }, options: AdminSession.callOptions)
        Console.err("WARNING: forgetting \(host) frees its port blocks for other hosts; if it is only cut off and still running, two hosts may use the same NAT IP:port (in lease mode it has fenced itself once its lease ran out).\n")
        for warning in response.warnings { Console.err("WARNING: \(warning)\n") }
        Console.err("Forgot [hosts/\(host)]: \(response.releasedBlocks) port block(s) freed.\n")
      }
    }
  }
}
