public import GRPCCore

/// An admin change that was refused; nothing was changed. It maps itself onto the gRPC status
/// the proto documents (`RPCErrorConvertible`), so a service method simply throws it.
public struct AdminError: Error, Equatable, CustomStringConvertible, RPCErrorConvertible {
  /// How the refusal maps onto gRPC status codes.
  public enum Kind: Sendable, Equatable {
    case invalidArgument, failedPrecondition, notFound, alreadyExists
  }
  public var kind: Kind
  /// Path of the offending field.
  public var field: String
  /// Why.
  public var reason: String

  public init(_ kind: Kind, field: String, reason: String) {
    self.kind = kind
    self.field = field
    self.reason = reason
  }

  public var description: String { "\(field): \(reason)" }

  public var rpcErrorCode: RPCError.Code {
    switch kind {
    case .invalidArgument: .invalidArgument
    case .failedPrecondition: .failedPrecondition
    case .notFound: .notFound
    case .alreadyExists: .alreadyExists
    }
  }

  public var rpcErrorMessage: String { description }

  /// The refusal is the whole story: clients see the code and the message, nothing more.
  public var rpcErrorCause: (any Error)? { nil }
}
