"""Evaluate ``template.yaml`` for a set of parameters the way CloudFormation would: Rules, Conditions, and each
function's environment (Globals merged in) with every intrinsic resolved — so a test sees the settings a deployed
function would see. Resources resolve to what the test provides (the table it created, the secrets it stored)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from local.template import load_template

NO_VALUE = object()


class RuleRefused(Exception):
    """CloudFormation would refuse these parameters (the Rule's AssertDescription)."""


@dataclass
class Deployment:
    parameters: dict[str, str] = field(default_factory=dict)  # overrides of the defaults
    refs: dict[str, str] = field(default_factory=dict)  # logical id -> what !Ref gives
    attributes: dict[str, str] = field(default_factory=dict)  # "LogicalId.Attr" -> what !GetAtt gives
    stack_name: str = "chat-test"
    region: str = "us-east-1"
    account: str = "123456789012"
    template: dict[str, Any] = field(default_factory=load_template)

    def __post_init__(self) -> None:
        unknown = set(self.parameters) - set(self.template["Parameters"])
        if unknown:
            raise KeyError(f"unknown parameters {sorted(unknown)}")

    # -- parameters, rules, conditions ------------------------------------------------------------------------

    def parameter(self, name: str) -> Any:
        spec = self.template["Parameters"][name]
        raw = str(self.parameters.get(name, spec.get("Default", "")))
        allowed = spec.get("AllowedValues")
        if allowed is not None and raw not in {str(v) for v in allowed}:
            raise RuleRefused(f"{name}={raw!r} is not one of {allowed}")
        if spec["Type"] == "CommaDelimitedList":
            return raw.split(",")
        return raw

    def check_rules(self) -> None:
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.resolve(assertion["Assert"]):
                    raise RuleRefused(f"{name}: {assertion.get('AssertDescription', '')}".strip())

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    # -- intrinsics ---------------------------------------------------------------------------------------------

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template["Parameters"]:
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        function, _, attribute = name.partition(".")
        if attribute == "Alias":  # SAM: the ARN of the alias AutoPublishAlias publishes
            alias = self.functions().get(function, {}).get("AutoPublishAlias")
            if alias is None:
                raise KeyError(f"!Ref {name}: {function} publishes no alias")
            return f"{self.get_att(f'{function}.Arn')}:{alias}"
        raise KeyError(f"the test gives no value for !Ref {name}")

    def get_att(self, target: str) -> Any:
        if target not in self.attributes:
            raise KeyError(f"the test gives no value for !GetAtt {target}")
        return self.attributes[target]

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            return str(self.get_att(name) if "." in name and not name.startswith("AWS::") else self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key in ("Condition", "Fn::Condition"):  # the loader spells the short form !Condition as Fn::
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "If":
            condition, yes, no = arg
            return self.resolve(yes if self.condition(condition) else no)
        if name == "GetAtt":
            return self.get_att(".".join(arg) if isinstance(arg, list) else arg)
        if name == "Sub":
            if isinstance(arg, str):
                return self.sub(arg, {})
            return self.sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
        values = self.resolve(arg)
        if name == "Equals":
            return values[0] == values[1]
        if name == "Not":
            return not values[0]
        if name == "And":
            return all(values)
        if name == "Or":
            return any(values)
        if name == "EachMemberEquals":
            return all(member == values[1] for member in values[0])
        if name == "Join":
            return values[0].join(values[1])
        if name == "Split":
            return values[1].split(values[0])
        if name == "Select":
            return values[1][int(values[0])]
        raise NotImplementedError(f"Fn::{name}")

    # -- what a function sees -----------------------------------------------------------------------------------

    def functions(self) -> dict[str, dict[str, Any]]:
        resources = self.template["Resources"]
        return {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}

    def environment(self, logical_id: str) -> dict[str, str]:
        """The function's environment variables, Globals merged in (SAM's rule: the function's keys win)."""
        merged = dict(self.template["Globals"]["Function"]["Environment"]["Variables"])
        merged.update(self.functions()[logical_id].get("Environment", {}).get("Variables", {}))
        resolved = self.resolve(merged)
        return {key: str(value) for key, value in resolved.items()}

    def output(self, name: str) -> Any:
        return self.resolve(self.template["Outputs"][name]["Value"])
