import t from 'tap';
import { QkdError, DeviceError } from '../src/errors.ts';

t.test('errors carry a code, a name and a cause', async (t) => {
  const cause = new Error('inner');
  const e = new DeviceError('OUT_OF_RANGE', 'bias 99 V above max 70 V', { cause });
  t.ok(e instanceof QkdError);
  t.equal(e.code, 'OUT_OF_RANGE');
  t.equal(e.name, 'DeviceError');
  t.equal(e.cause, cause);
});
