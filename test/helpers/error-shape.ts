// The one error shape: { statusCode, code, error, message }, and `details` — what the request got
// wrong, as JSON Pointers — on validation_error only.
import { expect } from 'vitest';

export function expectErrorKeys(body: Record<string, unknown>, label = ''): void {
  const keys = Object.keys(body).sort();
  if (body.code === 'validation_error' && 'details' in body) {
    expect(keys, label).toEqual(['code', 'details', 'error', 'message', 'statusCode']);
    expect(body.details, label).toEqual(expect.arrayContaining([{ path: expect.any(String), message: expect.any(String) }]));
    for (const detail of body.details as Array<Record<string, unknown>>) expect(Object.keys(detail).sort(), label).toEqual(['message', 'path']);
  } else {
    expect(keys, label).toEqual(['code', 'error', 'message', 'statusCode']);
  }
}
