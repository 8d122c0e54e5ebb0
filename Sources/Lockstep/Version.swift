public enum LockstepVersion { public static let string = "0.1.0" }
