"""The IAM roles ``sam deploy`` would create: ``template.yaml`` expanded by the SAM translator into plain
CloudFormation, then every intrinsic of the roles' policies resolved for one imaginary deployment (stack
``chat-test`` in 123456789012 / us-east-1).

The tests' resources have other names than a deployment's (a random table per test, moto's Lambda functions and
state machine named by their logical ids): ``Deployment.canonical`` maps a recorded resource ARN to the resource the
deployed stack would have in its place, so the evaluator sees the ARNs the real roles are written for.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from local.template import load_template

STACK = "chat-test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
SUFFIX = "1TESTSUFFIX1"  # CloudFormation's random part of generated names
_NO_VALUE = object()

# Managed policies SAM attaches (logs, tracing, VPC networking): they grant no access to the stack's data. A role
# given any other managed policy fails the test, since the evaluator only sees inline policies.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


def expand(parameters: dict[str, Any]) -> dict[str, Any]:
    """template.yaml through the SAM translator, as ``sam deploy`` sends it (code locations as after packaging)."""
    template = copy.deepcopy(load_template())
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://{STACK}-artifacts/{props[key]}"
    values = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION, "AWS::StackName": STACK}
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    return translator.translate(template, {**parameters, **values}, get_managed_policy_map=dict)


@dataclass
class Role:
    logical_id: str
    arn: str
    policies: list[dict[str, Any]]  # [{"name", "policy"}], resolved inline policies
    managed: list[str]


@dataclass
class Deployment:
    """One deployment of the template with these parameter values."""

    parameters: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def template(self) -> dict[str, Any]:
        return expand(self.parameters)

    @cached_property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

    @cached_property
    def parameter_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, spec in self.template.get("Parameters", {}).items():
            value = self.parameters.get(name, spec.get("Default"))
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = [] if value == "" else [part.strip() for part in value.split(",")]
            values[name] = value
        values.update(
            {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION, "AWS::StackName": STACK}
        )
        return values

    @cached_property
    def conditions(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        pending = dict(self.template.get("Conditions", {}))

        def evaluate(name: str) -> bool:
            if name not in results:
                results[name] = bool(self.resolve(pending[name], conditions=evaluate))
            return results[name]

        for name in pending:
            evaluate(name)
        return results

    # ------------------------------------------------------------------------------------------- resource names
    def physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        props = resource.get("Properties", {})
        named = {
            "AWS::StepFunctions::StateMachine": "StateMachineName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::DynamoDB::Table": "TableName",
            "AWS::SecretsManager::Secret": "Name",
            "AWS::Logs::LogGroup": "LogGroupName",
            "AWS::IAM::Role": "RoleName",
        }.get(resource["Type"])
        if named and named in props:
            return str(self.resolve(props[named]))
        return f"{STACK}-{logical_id}-{SUFFIX}"

    def ref(self, logical_id: str) -> Any:
        if logical_id in self.parameter_values:
            return self.parameter_values[logical_id]
        if logical_id == "AWS::NoValue":
            return _NO_VALUE
        kind = self.resources[logical_id]["Type"]
        if kind == "AWS::Lambda::Alias":  # Ref gives the alias ARN: the function's, qualified by the alias name
            props = self.resources[logical_id]["Properties"]
            return f"{self.get_att(props['FunctionName']['Ref'], 'Arn')}:{props['Name']}"
        name = self.physical_name(logical_id)
        if kind == "AWS::StepFunctions::StateMachine":
            return f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
        return name

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        arns = {
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::StepFunctions::StateMachine": str(self.ref(logical_id)),
            "AWS::SecretsManager::Secret": str(self.ref(logical_id)),
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute == "Name" and kind == "AWS::StepFunctions::StateMachine":
            return name
        if attribute == "FunctionUrl" and kind == "AWS::Lambda::Url":
            return f"https://{logical_id.lower()}.lambda-url.{REGION}.on.aws/"
        raise NotImplementedError(f"Fn::GetAtt {logical_id}.{attribute} ({kind})")

    # ------------------------------------------------------------------------------------------- intrinsics
    def resolve(self, value: Any, conditions: Any = None) -> Any:
        condition = conditions or (lambda name: self.conditions[name])
        if isinstance(value, list):
            items = [self.resolve(item, conditions) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                local = {name: self.resolve(v, conditions) for name, v in variables.items()}

                def substitute(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    if name in local:
                        return str(local[name])
                    if "." in name and name.split(".", 1)[0] in self.resources:
                        return self.get_att(*name.split(".", 1))
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}]+)\}", substitute, text)
            if key == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if condition(name) else no, conditions)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(p) for p in self.resolve(parts, conditions))
            if key == "Fn::Equals":
                left, right = self.resolve(arg, conditions)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0], conditions)
            if key == "Fn::And":
                return all(self.resolve(arg, conditions))
            if key == "Fn::Or":
                return any(self.resolve(arg, conditions))
            if key in ("Condition", "Fn::Condition"):
                return condition(arg)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items, conditions)[int(index)]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text, conditions)).split(separator)
            if key.startswith("Fn::"):
                raise NotImplementedError(f"intrinsic {key}")
        resolved = {k: self.resolve(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    # ------------------------------------------------------------------------------------------- roles
    def role_of(self, principal: str) -> Role:
        """The role a function or state machine (a logical id of template.yaml) runs with, policies resolved."""
        props = self.resources[principal]["Properties"]
        role_ref = props.get("Role") or props.get("RoleArn")
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise AssertionError(f"{principal}: expected a role created by the stack, got {role_ref!r}")
        role_id = role_ref["Fn::GetAtt"][0]
        role = self.resolve(self.resources[role_id]["Properties"])
        policies = [{"name": p["PolicyName"], "policy": p["PolicyDocument"]} for p in role.get("Policies", [])]
        for logical_id, resource in self.resources.items():  # stand-alone policies attached to the role
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                attached = self.resolve(resource["Properties"])
                if self.physical_name(role_id) in attached.get("Roles", []):
                    policies.append({"name": logical_id, "policy": attached["PolicyDocument"]})
        return Role(role_id, self.get_att(role_id, "Arn"), policies, list(role.get("ManagedPolicyArns", [])))

    def principals(self) -> list[str]:
        """Every function and state machine of the expanded template."""
        kinds = ("AWS::Lambda::Function", "AWS::StepFunctions::StateMachine")
        return [logical_id for logical_id, r in self.resources.items() if r["Type"] in kinds]

    # ------------------------------------------------------------------------------------------- test resources
    def canonical(self, arn: str) -> str:
        """A recorded resource ARN mapped to the deployed stack's resource in its place: the test's chat tables to
        ChatTable, moto's functions (with their alias qualifier) and state machines (named by logical id) to their
        deployed names, secrets named by the logical id of an AWS::SecretsManager::Secret to its ARN. Other ARNs
        (e.g. given as parameters) stay."""
        by_type: dict[str, list[str]] = {}
        for logical_id, resource in self.resources.items():
            by_type.setdefault(resource["Type"], []).append(logical_id)
        parts = arn.split(":", 5)
        if len(parts) < 6:
            return arn
        _, _, service, _, _, rest = parts
        if service == "dynamodb" and rest.startswith("table/"):
            tables = by_type.get("AWS::DynamoDB::Table", [])
            assert len(tables) == 1, f"which table of {tables} is {arn}?"
            name, _, index = rest[len("table/") :].partition("/")
            return self.get_att(tables[0], "Arn") + (f"/{index}" if index else "")
        if service == "states":
            kind, _, tail = rest.partition(":")
            name, _, execution = tail.partition(":")
            if name in by_type.get("AWS::StepFunctions::StateMachine", []):
                deployed = self.physical_name(name)
                base = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:{kind}:{deployed}"
                return f"{base}:{execution}" if execution else base
        if service == "lambda" and rest.startswith("function:"):
            _, name, *qualifier = rest.split(":")
            if name in by_type.get("AWS::Lambda::Function", []):
                return ":".join([self.get_att(name, "Arn"), *qualifier])
        if service == "secretsmanager" and rest.startswith("secret:"):
            name = rest[len("secret:") :].rsplit("-", 1)[0]
            for logical_id in by_type.get("AWS::SecretsManager::Secret", []):
                # "<logical id>" or "<test stack>-<logical id>" (tests that create a stack's secrets more than once)
                if name == logical_id or name.endswith(f"-{logical_id}"):
                    return str(self.ref(logical_id))
        return arn
