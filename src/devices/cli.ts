/**
 * Shared code of the `qkd devices` and `qkd device` commands (src/cli/commands/devices.ts,
 * device.ts): opening the configured set, describing a device, formatting values.
 */
import type { Capability, DeviceIdentity } from './types.ts';
import { DeviceSet, loadNodeConfig } from './config.ts';

export interface DeviceRow {
  id: string;
  kind: string;
  profile: string;
  transport: string;
  identity?: DeviceIdentity;
  state: string;
  error?: string;
}

export function openConfiguredSet(configFile: string | undefined, persist: boolean): DeviceSet {
  // Short back-off: a CLI command reports a missing device rather than waiting for it.
  return new DeviceSet(loadNodeConfig(configFile), { persist, reconnect: { initialMs: 100, maxMs: 500, maxAttempts: 3 } });
}

export async function describeAll(set: DeviceSet): Promise<DeviceRow[]> {
  const rows: DeviceRow[] = [];
  for (const [id, slot] of set.slots) {
    const row: DeviceRow = { id, kind: slot.profile?.kind ?? slot.device?.kind ?? '?', profile: slot.entry.profile, transport: slot.transport, state: 'failed' };
    if (!slot.device) {
      row.error = slot.error?.message;
    } else {
      try {
        row.identity = await slot.device.open();
        row.state = slot.device.state;
      } catch (err) {
        row.state = slot.device.state === 'closed' ? 'unavailable' : slot.device.state;
        row.error = (err as Error).message;
      }
    }
    rows.push(row);
  }
  return rows;
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

export function formatValue(v: number, c: Capability): string {
  if (c.labels) return `${v} (${c.labels[v - c.min] ?? '?'})`;
  const unit = c.unit === 'bool' || c.unit === 'enum' ? '' : ` ${c.unit}`;
  return `${v}${unit}`;
}

export function formatRange(c: Capability): string {
  if (c.labels) return c.labels.map((l, i) => `${c.min + i}=${l}`).join(' ');
  return `${c.min}..${c.max}${c.step ? ` step ${c.step}` : ''} ${c.unit}`;
}
