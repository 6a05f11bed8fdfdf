"""Write proto/grpc_service.proto and proto/model_config.proto back from tritonclient's descriptors.

No internet here, but `tritonclient` ships the Open Inference Protocol (KServe v2) as compiled
FileDescriptorProtos. Rendering them back to .proto text gives the published field names,
numbers and types exactly; tests/kserve/test_proto_matches_tritonclient.py checks that protoc
compiles our text to the very same descriptor bytes.

The files keep tritonclient's names at the root of proto/: the same descriptor under the same
file name is what lets our stubs and tritonclient's share one process (protobuf refuses two
files defining one symbol).

Usage: .venv/bin/python tools/recover_kserve_proto.py   (needs the dev extra installed)
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from google.protobuf import descriptor_pb2

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
F = descriptor_pb2.FieldDescriptorProto
SCALAR_NAMES = {
    F.TYPE_DOUBLE: "double",
    F.TYPE_FLOAT: "float",
    F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_UINT32: "uint32",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_SINT32: "sint32",
    F.TYPE_SINT64: "sint64",
}
INDENT = "  "


class _Renderer:
    """Renders one proto3 FileDescriptorProto; refuses features the KServe protos do not use."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        if file.syntax != "proto3" or file.options.ListFields() or file.extension:
            raise ValueError(f"{file.name}: only plain proto3 files are supported")
        self.file = file
        self.package_prefix = f".{file.package}."
        self.lines: list[str] = []

    def render(self, header: str) -> str:
        self.lines = [header, 'syntax = "proto3";', "", f"package {self.file.package};", ""]
        self.lines += [f'import "{dependency}";' for dependency in self.file.dependency]
        if self.file.dependency:
            self.lines.append("")
        for service in self.file.service:
            self._service(service)
        for enum in self.file.enum_type:
            self._enum(enum, 0)
        for message in self.file.message_type:
            self._message(message, 0)
        return "\n".join(self.lines).rstrip("\n") + "\n"

    def _emit(self, depth: int, text: str) -> None:
        self.lines.append(INDENT * depth + text)

    def _type_name(self, qualified: str) -> str:
        """Package-relative name; protoc resolves it back to the same qualified name."""
        if not qualified.startswith(self.package_prefix):
            raise ValueError(f"type {qualified} is outside package {self.file.package}")
        return qualified[len(self.package_prefix) :]

    def _service(self, service: descriptor_pb2.ServiceDescriptorProto) -> None:
        self._emit(0, f"service {service.name} {{")
        for method in service.method:
            if method.options.ListFields():
                raise ValueError(f"{method.name}: method options are not supported")
            request = ("stream " if method.client_streaming else "") + self._type_name(
                method.input_type
            )
            response = ("stream " if method.server_streaming else "") + self._type_name(
                method.output_type
            )
            self._emit(1, f"rpc {method.name}({request}) returns ({response}) {{}}")
        self._emit(0, "}")
        self.lines.append("")

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto, depth: int) -> None:
        if enum.options.ListFields() or enum.reserved_range or enum.reserved_name:
            raise ValueError(f"{enum.name}: enum options and reservations are not supported")
        self._emit(depth, f"enum {enum.name} {{")
        for value in enum.value:
            self._emit(depth + 1, f"{value.name} = {value.number};")
        self._emit(depth, "}")
        self.lines.append("")

    def _message(self, message: descriptor_pb2.DescriptorProto, depth: int) -> None:
        if message.options.ListFields() or message.reserved_range or message.extension_range:
            raise ValueError(f"{message.name}: message options and reservations are unsupported")
        map_entries = {
            nested.name: nested for nested in message.nested_type if nested.options.map_entry
        }
        self._emit(depth, f"message {message.name} {{")
        for enum in message.enum_type:
            self._enum(enum, depth + 1)
        for nested in message.nested_type:
            if nested.name not in map_entries:
                self._message(nested, depth + 1)
        self._fields(message, map_entries, depth + 1)
        self._emit(depth, "}")
        self.lines.append("")

    def _fields(
        self,
        message: descriptor_pb2.DescriptorProto,
        map_entries: dict[str, descriptor_pb2.DescriptorProto],
        depth: int,
    ) -> None:
        open_oneof: int | None = None
        for field in message.field:
            if field.proto3_optional or field.options.ListFields():
                raise ValueError(f"{message.name}.{field.name}: field options are unsupported")
            oneof = field.oneof_index if field.HasField("oneof_index") else None
            if oneof != open_oneof:
                if open_oneof is not None:
                    self._emit(depth, "}")
                if oneof is not None:
                    self._emit(depth, f"oneof {message.oneof_decl[oneof].name} {{")
                open_oneof = oneof
            indent = depth + (1 if oneof is not None else 0)
            self._emit(
                indent, f"{self._field_type(field, map_entries)} {field.name} = {field.number};"
            )
        if open_oneof is not None:
            self._emit(depth, "}")

    def _field_type(
        self, field: descriptor_pb2.FieldDescriptorProto, map_entries: dict[str, object]
    ) -> str:
        entry_name = field.type_name.rsplit(".", 1)[-1]
        if field.label == F.LABEL_REPEATED and entry_name in map_entries:
            entry = map_entries[entry_name]
            key, value = entry.field  # type: ignore[attr-defined]
            return f"map<{self._plain_type(key)}, {self._plain_type(value)}>"
        prefix = "repeated " if field.label == F.LABEL_REPEATED else ""
        return prefix + self._plain_type(field)

    def _plain_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
            return self._type_name(field.type_name)
        return SCALAR_NAMES[field.type]


def render_proto(file: descriptor_pb2.FileDescriptorProto, source: str) -> str:
    """The .proto text of `file`, headed by a comment naming where it was recovered from."""
    header = (
        f"// Open Inference Protocol (KServe v2) as shipped by {source}: recovered from its\n"
        "// compiled descriptor by tools/recover_kserve_proto.py, never edited by hand.\n"
    )
    return _Renderer(file).render(header)


def source_name() -> str:
    """The installed tritonclient release the protos are recovered from."""
    return f"tritonclient {version('tritonclient')}"


def main() -> None:
    from tritonclient.grpc import model_config_pb2, service_pb2

    source = source_name()
    for module in (model_config_pb2, service_pb2):
        file = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        path = PROTO_DIR / file.name
        path.write_text(render_proto(file, source))
        print(f"wrote {path.relative_to(PROTO_DIR.parent)}")


if __name__ == "__main__":
    main()
