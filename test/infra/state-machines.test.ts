import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import aslValidator from 'asl-validator';
import { WORKFLOWS } from '../../functions/commons/workflows/steps.ts';
import { substitutionsFor } from '../../infra/asl.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { buildStack, resourcesOf } from './support.ts';

const built = buildStack();
const fileOf = (workflow: string) => join(PROJECT_ROOT, 'state-machines', `${workflow}.asl.json`);
const textOf = (workflow: string) => readFileSync(fileOf(workflow), 'utf8');

/** Read independently of infra/asl.ts, so a wrong scanner there cannot hide here. */
function placeholders(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(/\$\{(\w+)\}/g), (match) => match[1] ?? ''))].sort();
}

describe('the state machine definitions', () => {
  it.each(WORKFLOWS)(
    '%s: the deployed substitutions are exactly the placeholders of its file',
    (workflow) => {
      // Prepare
      const logicalId = built.stack.getLogicalId(
        built.stack.stateMachines[workflow].node.defaultChild as Parameters<
          typeof built.stack.getLogicalId
        >[0],
      );

      // Act
      const props = resourcesOf(built.template, 'AWS::StepFunctions::StateMachine')[logicalId]
        ?.Properties;
      const keys = Object.keys(
        (props?.['DefinitionSubstitutions'] ?? {}) as Record<string, unknown>,
      ).sort();

      // Assess
      expect(placeholders(textOf(workflow)).length).toBeGreaterThan(4);
      expect(keys).toEqual(placeholders(textOf(workflow)));
    },
  );

  // asl-validator 4 accepts a whole-value `${...}` Resource as a substitution only
  // with the ARN check on: with it off, the value matches two schemas of a oneOf.
  it.each(WORKFLOWS)(
    '%s: asl-validator accepts the file as written, placeholders and all',
    (workflow) => {
      // Prepare
      const definition: unknown = JSON.parse(textOf(workflow));

      // Act
      const result = aslValidator(definition, { checkPaths: true, checkArn: true });

      // Assess
      expect(result.errorsText()).toBe('');
      expect(result.isValid).toBe(true);
    },
  );

  it.each(WORKFLOWS)(
    '%s: asl-validator accepts it with ARNs filled in and the ARN check on',
    (workflow) => {
      // Prepare
      const filled = textOf(workflow).replace(/\$\{(\w+)\}/g, (_match, name: string) => {
        if (name === 'CopyQueueUrl') return 'https://sqs.eu-west-1.amazonaws.com/123456789012/copy';
        if (name === 'ShardsInFlight') return '40';
        return `arn:aws:lambda:eu-west-1:123456789012:function:regvault-${name.replace(/FunctionArn$/, '')}`;
      });

      // Act
      const result = aslValidator(JSON.parse(filled), { checkPaths: true, checkArn: true });

      // Assess
      expect(result.errorsText()).toBe('');
      expect(result.isValid).toBe(true);
    },
  );

  it.each(WORKFLOWS)(
    '%s: the copy Maps keep as many shards in flight as the shardsInFlight setting says',
    (workflow) => {
      // Prepare
      const custom = buildStack({ shardsInFlight: '12' });
      const logicalId = custom.stack.getLogicalId(
        custom.stack.stateMachines[workflow].node.defaultChild as Parameters<
          typeof custom.stack.getLogicalId
        >[0],
      );
      const maps = Object.values(
        (JSON.parse(textOf(workflow)) as { States: Record<string, Record<string, unknown>> })
          .States,
      ).filter((state) => state['Type'] === 'Map');

      // Act
      const substitutions = resourcesOf(custom.template, 'AWS::StepFunctions::StateMachine')[
        logicalId
      ]?.Properties['DefinitionSubstitutions'] as Record<string, unknown>;

      // Assess
      expect(substitutions['ShardsInFlight']).toBe('12');
      expect(maps.length).toBeGreaterThan(0);
      for (const map of maps) {
        expect(map['MaxConcurrency']).toBeUndefined();
        expect(map['MaxConcurrencyPath']).toBe('$.shardsInFlight');
      }
    },
  );

  it('refuses to synthesise a definition with a placeholder the stack does not fill, or a value nothing uses', () => {
    // Prepare
    const file = fileOf('backup');
    const values = Object.fromEntries(
      placeholders(textOf('backup')).map((name) => [name, `value-of-${name}`]),
    );
    const { CopyQueueUrl: _dropped, ...missingOne } = values;

    // Act
    const complete = () => substitutionsFor(file, values);
    const missing = () => substitutionsFor(file, missingOne);
    const extra = () => substitutionsFor(file, { ...values, StaleFunctionArn: 'arn' });

    // Assess
    expect(complete()).toEqual(values);
    expect(missing).toThrow(/missing \["CopyQueueUrl"\]/);
    expect(extra).toThrow(/unused \["StaleFunctionArn"\]/);
  });
});
