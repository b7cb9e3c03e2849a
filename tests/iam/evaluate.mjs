// Evaluates AWS requests against IAM identity policies with @cloud-copilot/iam-simulate (a real evaluator:
// action and resource matching, NotAction/NotResource, conditions, explicit denies).
// stdin:  {"checks": [{"id", "principal", "policies": [{"name", "policy"}], "action", "resource", "accountId"}]}
// stdout: {"results": [{"id", "result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error", "error"?}]}
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const { checks } = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const results = []
for (const check of checks) {
  const simulation = {
    identityPolicies: check.policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    request: {
      action: check.action,
      principal: check.principal,
      resource: { accountId: check.accountId, resource: check.resource },
      contextVariables: {},
    },
  }
  const response = await runSimulation(simulation, {})
  if (response.resultType === 'error') {
    results.push({ id: check.id, result: 'Error', error: JSON.stringify(response.errors) })
  } else {
    results.push({ id: check.id, result: response.overallResult })
  }
}
process.stdout.write(JSON.stringify({ results }) + '\n')
